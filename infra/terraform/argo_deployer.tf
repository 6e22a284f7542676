# The identity of the pipeline workflow's `argo` job (.github/workflows/pipeline.yml, run by hand
# with engine = argo): it deploys the flows' WorkflowTemplates (make deploy-argo) and submits one
# TuningFlow run, and nothing else. Like gke.tf, everything here has count = local.gke.
#
# A Google service account of its own, not the pipeline's: it cannot reach Cloud SQL or the MLflow
# artifacts, and the pipeline's account cannot reach the cluster. Only production tokens of main
# may act as it, through the same provider as the pipeline (main.tf), bound to production's
# subject rather than to a principalSet, so another provider in the pool can never admit it.
#
# What it may do, and where:
# - Google Cloud: find the cluster and connect to its DNS endpoint (roles/container.clusterViewer,
#   which grants no Kubernetes permission by itself), and add Metaflow's code package to the
#   datastore bucket (read to see what is already there, create new objects; never overwrite or
#   delete, which the content-addressed package never needs).
# - Kubernetes: a Role in the flows' namespace only, for the Argo objects Metaflow's
#   `argo-workflows create` and `trigger` touch (WorkflowTemplates, the weekly CronWorkflow, the
#   Argo Events sensor of @trigger_on_finish) and the creation of Workflows, and for the
#   `kubectl port-forward svc/metaflow-metadata` through which the job, outside the cluster, reaches
#   the metadata service (metaflow_metadata.tf). No secrets, no exec, no ClusterRole.

resource "google_service_account" "argo_deployer" {
  count        = local.gke
  account_id   = var.argo_deployer_service_account_id
  display_name = "Argo deployer (GitHub Actions, production)"
  description  = "Impersonated by the production environment of ${local.github_repository} on main to deploy and start the flows on Argo Workflows in ${var.metaflow_namespace}; no key."

  depends_on = [google_project_service.required]
}

# The same subject as the pipeline's account (main.tf): production jobs of main, nothing else.
resource "google_service_account_iam_member" "argo_deployer_workload_identity_user" {
  count              = local.gke
  service_account_id = google_service_account.argo_deployer[0].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/subject/${local.production_subject}"
}

# container.clusters.get (gcloud container clusters get-credentials) and container.clusters.connect
# (the DNS endpoint). Kubernetes RBAC below decides what the account may do inside.
resource "google_project_iam_member" "argo_deployer_cluster_viewer" {
  count   = local.gke
  project = var.project_id
  role    = "roles/container.clusterViewer"
  member  = "serviceAccount:${google_service_account.argo_deployer[0].email}"
}

# `argo-workflows create` uploads the code package to the datastore: it checks whether the object
# exists (objectViewer) and writes it when it does not (objectCreator cannot replace or delete).
resource "google_storage_bucket_iam_member" "argo_deployer_datastore_reader" {
  count  = local.gke
  bucket = google_storage_bucket.metaflow_datastore[0].name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.argo_deployer[0].email}"
}

resource "google_storage_bucket_iam_member" "argo_deployer_datastore_creator" {
  count  = local.gke
  bucket = google_storage_bucket.metaflow_datastore[0].name
  role   = "roles/storage.objectCreator"
  member = "serviceAccount:${google_service_account.argo_deployer[0].email}"
}

# The verbs Metaflow 2.19's Argo client uses when it deploys (get, create or replace; it deletes
# only a sensor it replaces) and triggers (create a Workflow from the template), and those of a
# port-forward to the metadata service (the pipeline workflow's argo job, before it deploys).
resource "kubernetes_role_v1" "argo_deployer" {
  count = local.gke

  metadata {
    name      = "argo-deployer"
    namespace = kubernetes_namespace_v1.metaflow[0].metadata[0].name
  }

  rule {
    api_groups = ["argoproj.io"]
    resources  = ["workflowtemplates", "cronworkflows"]
    verbs      = ["get", "create", "update"]
  }

  rule {
    api_groups = ["argoproj.io"]
    resources  = ["sensors"]
    verbs      = ["get", "create", "update", "delete"]
  }

  rule {
    api_groups = ["argoproj.io"]
    resources  = ["workflows"]
    verbs      = ["create"]
  }

  # kubectl port-forward svc/NAME: it reads the Service (this one, by name) to find its selector and
  # port, lists the pods it selects, reads the one it picks and opens pods/NAME/portforward.
  rule {
    api_groups     = [""]
    resources      = ["services"]
    resource_names = [var.metaflow_metadata_service_name]
    verbs          = ["get"]
  }

  # Not restricted by name: the Deployment's pod has a generated name (metaflow-metadata-HASH-ID),
  # and a list cannot be restricted by name anyway. It reads the namespace's pod specs, which name
  # the Secrets the step pods use (envFrom) but do not carry their values.
  rule {
    api_groups = [""]
    resources  = ["pods"]
    verbs      = ["get", "list"]
  }

  # Not restricted by name either, for the same generated name: the account may port-forward to any
  # pod of this namespace. `create` is what SPDY (older kubectl) needs; kubectl 1.31+ speaks
  # WebSockets, whose upgrade is a GET that the API server authorises as `get` (and, from 1.35 with
  # AuthorizePodWebsocketUpgradeCreatePermission on, as `create` as well), so both are needed.
  rule {
    api_groups = [""]
    resources  = ["pods/portforward"]
    verbs      = ["get", "create"]
  }
}

# GKE names a Google service account in RBAC by its email, as a User.
resource "kubernetes_role_binding_v1" "argo_deployer" {
  count = local.gke

  metadata {
    name      = "argo-deployer"
    namespace = kubernetes_namespace_v1.metaflow[0].metadata[0].name
  }

  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.argo_deployer[0].metadata[0].name
  }

  subject {
    api_group = "rbac.authorization.k8s.io"
    kind      = "User"
    name      = google_service_account.argo_deployer[0].email
  }
}
