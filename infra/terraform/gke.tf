# The Kubernetes path (README.md, "Running on Kubernetes"): a GKE Autopilot cluster whose pods run
# the flows' steps through Metaflow's Argo Workflows integration, the bucket of Metaflow's
# datastore, and the least-privilege Google service account the steps act as through Workload
# Identity. Everything here has count = local.gke: nothing exists until enable_gke = true.
#
# Why Autopilot and not Standard with a GPU node pool: Autopilot provisions a node of the GPU a pod
# selects (nodeSelector cloud.google.com/gke-accelerator, which modules/kubernetes.py puts on the
# DNN steps) and removes it when the pod ends, so a weekly pipeline pays for GPU minutes, not for a
# node pool that idles all week. It is private-nodes, Workload Identity and Shielded-nodes by
# design, and Google patches the nodes within the release channel.

locals {
  gke                  = var.enable_gke ? 1 : 0
  metaflow_bucket_name = coalesce(var.metaflow_datastore_bucket_name, "${var.project_id}-metaflow")
  # The one Kubernetes identity that may act as the steps' Google service account.
  metaflow_workload_identity_member = "serviceAccount:${var.project_id}.svc.id.goog[${var.metaflow_namespace}/${var.metaflow_kubernetes_service_account}]"
}

resource "google_project_service" "gke" {
  for_each = var.enable_gke ? toset([
    "container.googleapis.com", # GKE
    "compute.googleapis.com",   # the cluster's network, router and NAT
  ]) : toset([])

  service            = each.value
  disable_on_destroy = false
}

# ---------------------------------------------------------------- Cluster

# Nodes act as this account (logs, metrics, image pulls), not as the Compute Engine default
# account, which often holds Editor on the project.
resource "google_service_account" "gke_nodes" {
  count        = local.gke
  account_id   = "gke-${substr(var.gke_cluster_name, 0, 20)}-nodes"
  display_name = "GKE nodes of ${var.gke_cluster_name}"

  depends_on = [google_project_service.required]
}

# The narrow role Google defines for node accounts: write logs and metrics, read node config.
resource "google_project_iam_member" "gke_nodes_default" {
  count   = local.gke
  project = var.project_id
  role    = "roles/container.defaultNodeServiceAccount"
  member  = "serviceAccount:${google_service_account.gke_nodes[0].email}"
}

# Pull the pipeline images (artifact_registry.tf) from their repository, and from no other.
resource "google_artifact_registry_repository_iam_member" "gke_nodes_image_reader" {
  count      = local.gke
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.gke_nodes[0].email}"
}

resource "google_container_cluster" "metaflow" {
  #checkov:skip=CKV_GCP_69:Autopilot always runs the GKE metadata server (Workload Identity) and refuses node_config, where the check looks for it
  #checkov:skip=CKV_GCP_12:Autopilot enforces NetworkPolicy with Dataplane V2 (ADVANCED_DATAPATH below); the check wants a Calico network_policy block, which Autopilot does not take
  #checkov:skip=CKV_GCP_65:RBAC through Google Groups needs a Google Workspace domain; the only identity granted anything in the cluster is the steps' service account
  count    = local.gke
  name     = var.gke_cluster_name
  location = var.region

  enable_autopilot = true
  network          = var.gke_network
  subnetwork       = var.gke_subnetwork
  # The cluster keeps no data (artifacts are in the datastore bucket, runs in MLflow):
  # enable_gke = false must be able to delete it.
  deletion_protection = false

  release_channel {
    channel = var.gke_release_channel
  }

  # Nodes have no public IP; they reach the internet (Argo's images on quay.io, the tracking
  # server) through the Cloud NAT below and Google APIs through Private Google Access.
  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
  }

  # No network may reach the control plane's IP endpoint; people and Terraform use the DNS
  # endpoint, which IAM authorises (gcloud container clusters get-credentials --dns-endpoint).
  master_authorized_networks_config {}

  control_plane_endpoints_config {
    dns_endpoint_config {
      allow_external_traffic = true
    }
  }

  ip_allocation_policy {}

  # Autopilot's defaults, spelled out: Dataplane V2 enforces NetworkPolicy, pod-to-pod traffic on
  # one node goes through the VPC (flow logs, firewall rules), and no client certificate is issued.
  datapath_provider           = "ADVANCED_DATAPATH"
  enable_intranode_visibility = true

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  # Pods get Google credentials only through a Kubernetes service account bound below.
  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  cluster_autoscaling {
    auto_provisioning_defaults {
      service_account = google_service_account.gke_nodes[0].email
      oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    }
  }

  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  resource_labels = {
    app = "operational-ml"
  }

  depends_on = [google_project_service.gke, google_project_iam_member.gke_nodes_default]
}

resource "google_compute_router" "gke" {
  count   = local.gke
  name    = "${var.gke_cluster_name}-router"
  region  = var.region
  network = var.gke_network

  depends_on = [google_project_service.gke]
}

resource "google_compute_router_nat" "gke" {
  count                              = local.gke
  name                               = "${var.gke_cluster_name}-nat"
  router                             = google_compute_router.gke[0].name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# ---------------------------------------------------------------- Metaflow datastore

resource "google_storage_bucket" "metaflow_datastore" {
  count    = local.gke
  name     = local.metaflow_bucket_name
  location = local.bucket_location

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = "metaflow"
  }

  # Artifacts and code packages of old runs go after the retention; so do overwritten versions.
  lifecycle_rule {
    condition {
      age = var.metaflow_datastore_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  depends_on = [google_project_service.required]
}

# ---------------------------------------------------------------- The steps' identity

resource "google_service_account" "metaflow_steps" {
  count        = local.gke
  account_id   = var.metaflow_service_account_id
  display_name = "Metaflow steps on GKE"
  description  = "Acted as by the Kubernetes service account ${var.metaflow_namespace}/${var.metaflow_kubernetes_service_account} through Workload Identity; no key."

  depends_on = [google_project_service.required]
}

# Read and write the datastore (artifacts, code packages), and no other bucket but the next.
resource "google_storage_bucket_iam_member" "metaflow_steps_datastore" {
  count  = local.gke
  bucket = google_storage_bucket.metaflow_datastore[0].name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.metaflow_steps[0].email}"
}

# MLflow artifacts, when a step logs to the tracking server's bucket directly.
resource "google_storage_bucket_iam_member" "metaflow_steps_artifacts" {
  count  = local.gke
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.metaflow_steps[0].email}"
}

# Connect to the MLflow instance through the Cloud SQL Auth Proxy, and to no other instance.
resource "google_project_iam_member" "metaflow_steps_cloudsql_client" {
  count   = local.gke
  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = "serviceAccount:${google_service_account.metaflow_steps[0].email}"

  condition {
    title       = "only-${var.instance_name}"
    description = "Cloud SQL client on the MLflow instance only."
    expression  = "resource.type == 'sqladmin.googleapis.com/Instance' && resource.name == 'projects/${var.project_id}/instances/${google_sql_database_instance.mlflow.name}'"
  }
}

# Workload Identity: the one Kubernetes service account of the steps may act as this account.
# Bound on the account itself, never project-wide.
resource "google_service_account_iam_member" "metaflow_steps_workload_identity" {
  count              = local.gke
  service_account_id = google_service_account.metaflow_steps[0].name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.metaflow_workload_identity_member

  depends_on = [google_container_cluster.metaflow]
}
