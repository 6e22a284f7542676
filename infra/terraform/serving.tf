# The champion served online: a Cloud Run (v2) service running the `serve` image
# (docker/Dockerfile) as its own least-privilege service account. It reads the registry
# from the MLflow database and the model files from the artifact bucket (objectViewer),
# checks the files' digest before loading, follows the `champion` alias, and appends each
# request to the prediction log. It logs in to the database as its IAM database user through
# a Cloud SQL Auth Proxy sidecar (--auto-iam-authn): no password exists anywhere, and what
# that user may do (SELECT on MLflow's tables, membership of the INSERT-only
# `prediction_writer` role) is granted by the operator (README.md). Only the members in
# var.serving_invokers may call it: there is no allUsers / allAuthenticatedUsers invoker,
# and ingress is internal by default.
#
# The service is created once an image exists (var.serving_image, by digest); later
# revisions are deployed by the pipeline workflow's `deploy-serving` job, so Terraform
# ignores the image after creation.

locals {
  serving_member = "serviceAccount:${google_service_account.serving.email}"
  # Cloud SQL names an IAM service-account user by its email without .gserviceaccount.com;
  # in a URI its @ is written %40. The user itself is made with gcloud (README.md).
  serving_database_user = trimsuffix(google_service_account.serving.email, ".gserviceaccount.com")
  serving_database_uri  = "postgresql://${replace(local.serving_database_user, "@", "%40")}@127.0.0.1:5432/${google_sql_database.mlflow.name}"
  serving_enabled       = var.serving_image != null
}

# ---------------------------------------------------------------- Identity

resource "google_service_account" "serving" {
  account_id   = var.serving_service_account_id
  display_name = "MLflow serving (Cloud Run)"
  description  = "Runs the Cloud Run service that serves models:/NAME@champion; reads the registry and the model files, writes the prediction log."

  depends_on = [google_project_service.required]
}

# Read the model files: objects of the artifact bucket only, no write, no listing of other buckets.
resource "google_storage_bucket_iam_member" "serving_artifacts" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectViewer"
  member = local.serving_member
}

# Connect to the MLflow instance (the proxy sidecar) and log in to it as the IAM database
# user (cloudsql.instances.login), on that instance only.
resource "google_project_iam_member" "serving_cloudsql_client" {
  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = local.serving_member

  condition {
    title       = "serving-only-${var.instance_name}"
    description = "On the MLflow instance only."
    expression  = "resource.type == 'sqladmin.googleapis.com/Instance' && resource.name == 'projects/${var.project_id}/instances/${google_sql_database_instance.mlflow.name}'"
  }
}

resource "google_project_iam_member" "serving_cloudsql_instance_user" {
  project = var.project_id
  role    = "roles/cloudsql.instanceUser"
  member  = local.serving_member

  condition {
    title       = "serving-only-${var.instance_name}"
    description = "On the MLflow instance only."
    expression  = "resource.type == 'sqladmin.googleapis.com/Instance' && resource.name == 'projects/${var.project_id}/instances/${google_sql_database_instance.mlflow.name}'"
  }
}

# ---------------------------------------------------------------- Service

resource "google_cloud_run_v2_service" "serving" {
  count = local.serving_enabled ? 1 : 0

  name     = var.serving_service_name
  location = var.region
  # Internal by default: only from this project's VPC networks (and a load balancer if you
  # add one). Either way every request needs an identity token of an invoker below.
  ingress = var.serving_ingress

  template {
    service_account                  = google_service_account.serving.email
    max_instance_request_concurrency = var.serving_concurrency
    timeout                          = "60s"

    scaling {
      min_instance_count = var.serving_min_instances
      max_instance_count = var.serving_max_instances
    }

    # The Cloud SQL Auth Proxy beside the server: 127.0.0.1:5432 inside the instance, IAM
    # login as the service account, TLS to the database.
    containers {
      name  = "cloud-sql-proxy"
      image = var.cloud_sql_proxy_image
      args = [
        "--auto-iam-authn",
        "--structured-logs",
        "--address=127.0.0.1",
        "--port=5432",
        "--health-check",
        "--http-address=127.0.0.1",
        "--http-port=9090",
        google_sql_database_instance.mlflow.connection_name,
      ]

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
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
    }

    containers {
      name       = "serve"
      image      = var.serving_image
      depends_on = ["cloud-sql-proxy"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.serving_cpu
          memory = var.serving_memory
        }
        # Scoring is CPU-bound: keep the CPU between requests so the alias poll runs.
        cpu_idle          = false
        startup_cpu_boost = true
      }

      env {
        name  = "SERVE_MODEL_NAME"
        value = var.serving_model_name
      }
      env {
        name  = "MLFLOW_TRACKING_URI"
        value = local.serving_database_uri
      }
      env {
        name  = "PREDICTION_LOG_URI"
        value = local.serving_database_uri
      }
      env {
        name  = "SERVE_POLL_S"
        value = tostring(var.serving_poll_s)
      }

      # Ready once the model is loaded and its digest checked (the port opens only then).
      startup_probe {
        initial_delay_seconds = 5
        period_seconds        = 5
        timeout_seconds       = 3
        failure_threshold     = 48
        http_get {
          path = "/ping"
        }
      }
      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3
        http_get {
          path = "/ping"
        }
      }
    }
  }

  # The deploy-serving job moves the image to each new digest; Terraform does not move it back.
  lifecycle {
    ignore_changes = [template[0].containers[1].image, client, client_version]
  }

  depends_on = [
    google_project_service.containers,
    google_project_iam_member.serving_cloudsql_client,
    google_project_iam_member.serving_cloudsql_instance_user,
  ]
}

# Who may call the service: named principals only (validated in variables_serving.tf).
resource "google_cloud_run_v2_service_iam_member" "serving_invokers" {
  for_each = local.serving_enabled ? toset(var.serving_invokers) : toset([])

  name     = google_cloud_run_v2_service.serving[0].name
  location = google_cloud_run_v2_service.serving[0].location
  role     = "roles/run.invoker"
  member   = each.value
}

# ---------------------------------------------------------------- Deploying new revisions

# The production pipeline deploys revisions of this one service (run.developer on the
# service, not the project) ...
resource "google_cloud_run_v2_service_iam_member" "pipeline_deploys_serving" {
  count = local.serving_enabled ? 1 : 0

  name     = google_cloud_run_v2_service.serving[0].name
  location = google_cloud_run_v2_service.serving[0].location
  role     = "roles/run.developer"
  member   = local.pipeline_member
}

# ... which run as the serving account: deploying needs actAs on that account only.
resource "google_service_account_iam_member" "pipeline_acts_as_serving" {
  service_account_id = google_service_account.serving.name
  role               = "roles/iam.serviceAccountUser"
  member             = local.pipeline_member
}
