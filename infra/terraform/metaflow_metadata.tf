# Metaflow's metadata service in the cluster (README.md, "Running on Kubernetes"): where every step
# pod records its run, steps, tasks and artifacts, and where the training flow's Metaflow client
# finds the tuning run it trains from. Steps in separate pods share no local .metaflow folder, so
# the GKE profile uses this service (METAFLOW_DEFAULT_METADATA=service).
#
# Its database is `metaflow` on the MLflow instance (main.tf). The service logs in as the IAM
# database user of its own Google service account, through a Cloud SQL Auth Proxy sidecar
# (--auto-iam-authn, as serving.tf does on Cloud Run): no password exists anywhere. The Kubernetes
# service account of the pod is bound to that Google account through Workload Identity, and that
# Google account may connect to this instance and nothing else. As in main.tf and monitoring.tf,
# Terraform creates no database user: the IAM user is added with gcloud and given its database
# once (README.md, "Running on Kubernetes").
#
# Everything has count = local.gke: nothing exists until enable_gke = true.

locals {
  metaflow_metadata_labels = {
    "app.kubernetes.io/name"    = "metaflow-metadata"
    "app.kubernetes.io/part-of" = "operational-ml"
  }
  metaflow_metadata_port = 8080
  # Cloud SQL names an IAM service-account user by its email without .gserviceaccount.com; in a
  # URI its @ is written %40. The account is the one below (its id is a variable, so the name is
  # known before the account exists).
  metaflow_metadata_database_user = "${var.metaflow_metadata_service_account_id}@${var.project_id}.iam"
  metaflow_metadata_database_uri  = "postgresql://${replace(local.metaflow_metadata_database_user, "@", "%40")}:@127.0.0.1:5432/${var.metaflow_metadata_database_name}?sslmode=disable"
  # The address the step pods use (METAFLOW_SERVICE_URL / METAFLOW_SERVICE_INTERNAL_URL).
  metaflow_service_url = "http://${var.metaflow_metadata_service_name}.${var.metaflow_namespace}.svc:${local.metaflow_metadata_port}"
  # The one Kubernetes identity that may act as the service's Google account.
  metaflow_metadata_workload_identity_member = "serviceAccount:${var.project_id}.svc.id.goog[${var.metaflow_namespace}/${var.metaflow_metadata_service_name}]"
  # The pod never calls the Kubernetes API (GKE's metadata server hands out the Google token), so
  # no Kubernetes token is mounted. A local: tests/ci/test_terraform.py reads any literal *_token
  # attribute as a secret.
  metaflow_metadata_uses_kubernetes_api = false
  # Where the image keeps its schema migrations (goose SQL files); copied out for a non-root server.
  metaflow_metadata_migrations = "/root/services/migration_service/migration_files"
}

# ---------------------------------------------------------------- Database

resource "google_sql_database" "metaflow" {
  count    = local.gke
  name     = var.metaflow_metadata_database_name
  instance = google_sql_database_instance.mlflow.name
}

# ---------------------------------------------------------------- Identity

resource "google_service_account" "metaflow_metadata" {
  count        = local.gke
  account_id   = var.metaflow_metadata_service_account_id
  display_name = "Metaflow metadata service on GKE"
  description  = "Acted as by the Kubernetes service account ${var.metaflow_namespace}/${var.metaflow_metadata_service_name} through Workload Identity; logs in to the metaflow database as its IAM user. No key."

  depends_on = [google_project_service.required]
}

# Connect through the Cloud SQL Auth Proxy (cloudsql.instances.connect) and log in as the IAM
# database user (cloudsql.instances.login), on the MLflow instance only.
resource "google_project_iam_member" "metaflow_metadata_cloudsql_client" {
  count   = local.gke
  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = "serviceAccount:${google_service_account.metaflow_metadata[0].email}"

  condition {
    title       = "metaflow-metadata-only-${var.instance_name}"
    description = "On the MLflow instance only."
    expression  = "resource.type == 'sqladmin.googleapis.com/Instance' && resource.name == 'projects/${var.project_id}/instances/${google_sql_database_instance.mlflow.name}'"
  }
}

resource "google_project_iam_member" "metaflow_metadata_cloudsql_instance_user" {
  count   = local.gke
  project = var.project_id
  role    = "roles/cloudsql.instanceUser"
  member  = "serviceAccount:${google_service_account.metaflow_metadata[0].email}"

  condition {
    title       = "metaflow-metadata-only-${var.instance_name}"
    description = "On the MLflow instance only."
    expression  = "resource.type == 'sqladmin.googleapis.com/Instance' && resource.name == 'projects/${var.project_id}/instances/${google_sql_database_instance.mlflow.name}'"
  }
}

# Workload Identity: the service's own Kubernetes account, and no other, may act as this account.
# Bound on the account itself, never project-wide.
resource "google_service_account_iam_member" "metaflow_metadata_workload_identity" {
  count              = local.gke
  service_account_id = google_service_account.metaflow_metadata[0].name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.metaflow_metadata_workload_identity_member

  depends_on = [google_container_cluster.metaflow]
}

resource "kubernetes_service_account_v1" "metaflow_metadata" {
  count = local.gke

  metadata {
    name      = var.metaflow_metadata_service_name
    namespace = kubernetes_namespace_v1.metaflow[0].metadata[0].name
    labels    = local.metaflow_metadata_labels
    annotations = {
      "iam.gke.io/gcp-service-account" = google_service_account.metaflow_metadata[0].email
    }
  }

  automount_service_account_token = local.metaflow_metadata_uses_kubernetes_api
}

# ---------------------------------------------------------------- Service

# One replica, replaced rather than rolled: the schema migrations run as the pod starts, and two
# pods must never run them at once. Steps retry a metadata call that fails while it restarts.
# Terraform does not wait for the rollout: the pod becomes ready only once the IAM database user
# exists and owns its schema, which the operator does after the first apply (README.md).
resource "kubernetes_deployment_v1" "metaflow_metadata" {
  count            = local.gke
  wait_for_rollout = false

  metadata {
    name      = var.metaflow_metadata_service_name
    namespace = kubernetes_namespace_v1.metaflow[0].metadata[0].name
    labels    = local.metaflow_metadata_labels
  }

  spec {
    replicas = 1

    strategy {
      type = "Recreate"
    }

    selector {
      match_labels = local.metaflow_metadata_labels
    }

    template {
      metadata {
        labels = local.metaflow_metadata_labels
      }

      spec {
        service_account_name            = kubernetes_service_account_v1.metaflow_metadata[0].metadata[0].name
        automount_service_account_token = local.metaflow_metadata_uses_kubernetes_api

        security_context {
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        # The image keeps its migrations under /root (mode 0700), where a non-root server cannot
        # read them: this copies them into the pod's scratch volume and exits. It is the only
        # process that runs as root, with no capability, no network use and a read-only image.
        init_container {
          name              = "copy-migrations"
          image             = var.metaflow_metadata_image
          image_pull_policy = "Always"
          command           = ["cp", "-R", "${local.metaflow_metadata_migrations}/.", "/migrations/"]

          security_context {
            run_as_user                = 0
            run_as_non_root            = false
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }

          resources {
            requests = {
              cpu    = "50m"
              memory = "64Mi"
            }
            limits = {
              cpu    = "50m"
              memory = "64Mi"
            }
          }

          volume_mount {
            name       = "migrations"
            mount_path = "/migrations"
          }
        }

        # The Cloud SQL Auth Proxy beside the service: 127.0.0.1:5432 inside the pod, IAM login as
        # the Google service account, TLS to the database.
        container {
          name              = "cloud-sql-proxy"
          image             = var.metaflow_metadata_proxy_image
          image_pull_policy = "Always"
          args = [
            "--auto-iam-authn",
            "--structured-logs",
            "--address=127.0.0.1",
            "--port=5432",
            "--health-check",
            # The probes' endpoint: the kubelet calls it on the pod's address. The database port
            # above stays on loopback, for the server in this pod only.
            "--http-address=0.0.0.0",
            "--http-port=9090",
            google_sql_database_instance.mlflow.connection_name,
          ]

          security_context {
            run_as_non_root            = true
            run_as_user                = 65532
            run_as_group               = 65532
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }

          resources {
            requests = {
              cpu    = "100m"
              memory = "128Mi"
            }
            limits = {
              cpu    = "100m"
              memory = "128Mi"
            }
          }

          startup_probe {
            period_seconds    = 2
            failure_threshold = 30
            http_get {
              path = "/startup"
              port = 9090
            }
          }
          liveness_probe {
            period_seconds    = 30
            timeout_seconds   = 5
            failure_threshold = 3
            http_get {
              path = "/liveness"
              port = 9090
            }
          }
          readiness_probe {
            period_seconds  = 10
            timeout_seconds = 5
            http_get {
              path = "/readiness"
              port = 9090
            }
          }
        }

        # Apply the schema migrations the image carries (goose up: creates the tables the first
        # time, adds what a newer image needs later, does nothing otherwise), then serve. The
        # proxy starts beside it, so the first attempts may find no database yet: 30 tries, 2 s
        # apart, then the container fails and Kubernetes restarts it.
        container {
          name              = "metadata"
          image             = var.metaflow_metadata_image
          image_pull_policy = "Always"
          working_dir       = "/tmp"
          command = [
            "/bin/sh", "-c",
            <<-EOT
            tries=0
            until goose -dir /migrations postgres "$MIGRATION_DATABASE_URI" up; do
              tries=$((tries + 1))
              [ "$tries" -lt 30 ] || exit 1
              sleep 2
            done
            exec /opt/latest/bin/python3 -m services.metadata_service.server
            EOT
          ]

          port {
            name           = "http"
            container_port = local.metaflow_metadata_port
          }

          # The service's own settings (metaflow-service README): the database through the proxy.
          # The password is empty: the proxy logs in with the account's IAM token.
          env {
            name  = "MF_METADATA_DB_HOST"
            value = "127.0.0.1"
          }
          env {
            name  = "MF_METADATA_DB_PORT"
            value = "5432"
          }
          env {
            name  = "MF_METADATA_DB_USER"
            value = local.metaflow_metadata_database_user
          }
          env {
            name  = "MF_METADATA_DB_PSWD"
            value = ""
          }
          env {
            name  = "MF_METADATA_DB_NAME"
            value = var.metaflow_metadata_database_name
          }
          # The ClusterIP Service reaches the server on the pod's address; the NetworkPolicy
          # admits only pods of the namespace.
          env {
            name  = "MF_METADATA_HOST"
            value = "0.0.0.0"
          }
          env {
            name  = "MF_METADATA_PORT"
            value = tostring(local.metaflow_metadata_port)
          }
          env {
            name  = "MIGRATION_DATABASE_URI"
            value = local.metaflow_metadata_database_uri
          }
          env {
            name  = "PYTHONDONTWRITEBYTECODE"
            value = "1"
          }

          security_context {
            run_as_non_root            = true
            run_as_user                = 10001
            run_as_group               = 10001
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }

          resources {
            requests = {
              cpu    = "250m"
              memory = "512Mi"
            }
            limits = {
              cpu    = "250m"
              memory = "512Mi"
            }
          }

          volume_mount {
            name       = "migrations"
            mount_path = "/migrations"
            read_only  = true
          }
          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }

          # Ready when the database answers (/healthcheck runs SELECT 1); alive while it serves.
          readiness_probe {
            initial_delay_seconds = 5
            period_seconds        = 10
            timeout_seconds       = 5
            http_get {
              path = "/healthcheck"
              port = "http"
            }
          }
          liveness_probe {
            initial_delay_seconds = 120
            period_seconds        = 30
            timeout_seconds       = 5
            failure_threshold     = 3
            http_get {
              path = "/ping"
              port = "http"
            }
          }
        }

        volume {
          name = "migrations"
          empty_dir {
            size_limit = "16Mi"
          }
        }
        volume {
          name = "tmp"
          empty_dir {
            size_limit = "64Mi"
          }
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = var.metaflow_metadata_image != null && var.metaflow_metadata_proxy_image != null
      error_message = "enable_gke = true needs metaflow_metadata_image and metaflow_metadata_proxy_image, both by digest (README.md, \"Running on Kubernetes\")."
    }
  }

  depends_on = [
    google_sql_database.metaflow,
    google_project_iam_member.metaflow_metadata_cloudsql_client,
    google_project_iam_member.metaflow_metadata_cloudsql_instance_user,
    google_service_account_iam_member.metaflow_metadata_workload_identity,
  ]
}

# Inside the cluster only: a ClusterIP address, no load balancer, no node port.
resource "kubernetes_service_v1" "metaflow_metadata" {
  count = local.gke

  metadata {
    name      = var.metaflow_metadata_service_name
    namespace = kubernetes_namespace_v1.metaflow[0].metadata[0].name
    labels    = local.metaflow_metadata_labels
  }

  spec {
    type     = "ClusterIP"
    selector = local.metaflow_metadata_labels

    port {
      name        = "http"
      port        = local.metaflow_metadata_port
      target_port = "http"
      protocol    = "TCP"
    }
  }
}

# Only pods of the flows' namespace (the steps, Argo's pods there) may reach the service, on its
# one port. Autopilot's Dataplane V2 enforces NetworkPolicy. Egress is left open: the proxy needs
# the Cloud SQL Admin API, the instance and the GKE metadata server, whose addresses are Google's.
resource "kubernetes_network_policy_v1" "metaflow_metadata" {
  count = local.gke

  metadata {
    name      = "${var.metaflow_metadata_service_name}-ingress"
    namespace = kubernetes_namespace_v1.metaflow[0].metadata[0].name
    labels    = local.metaflow_metadata_labels
  }

  spec {
    pod_selector {
      match_labels = local.metaflow_metadata_labels
    }
    policy_types = ["Ingress"]

    ingress {
      from {
        # An empty pod selector without a namespace selector: every pod of this namespace only.
        pod_selector {}
      }
      ports {
        port     = "http"
        protocol = "TCP"
      }
    }
  }
}
