# The cloud side of the pipeline: PostgreSQL for MLflow metadata, a bucket for MLflow
# artifacts, a least-privilege service account, and Workload Identity Federation so
# that GitHub Actions of ONE repository can act as that account without any key.

locals {
  bucket_name     = coalesce(var.bucket_name, "${var.project_id}-mlflow-artifacts")
  bucket_location = upper(coalesce(var.bucket_location, var.region))
  # A password given as a variable wins; otherwise the generated one is used.
  database_password = coalesce(var.database_password, random_password.database.result)
  pipeline_member   = "serviceAccount:${google_service_account.pipeline.email}"
}

# ---------------------------------------------------------------- APIs

resource "google_project_service" "required" {
  for_each = toset([
    "sqladmin.googleapis.com",      # Cloud SQL, and the Auth Proxy's connection API
    "storage.googleapis.com",       # the artifact bucket
    "iam.googleapis.com",           # service account and Workload Identity pool
    "iamcredentials.googleapis.com", # short-lived tokens for the impersonated account
    "sts.googleapis.com",           # exchanging GitHub's OIDC token
    "secretmanager.googleapis.com", # the database password
  ])

  service = each.value
  # Turning an API off on destroy could break other workloads in the project.
  disable_on_destroy = false
}

# ---------------------------------------------------------------- Cloud SQL

resource "google_sql_database_instance" "mlflow" {
  name             = var.instance_name
  database_version = "POSTGRES_15"
  region           = var.region

  # Terraform refuses to destroy the instance while this is true ...
  deletion_protection = true

  settings {
    tier              = var.database_tier
    edition           = "ENTERPRISE"
    availability_type = var.high_availability ? "REGIONAL" : "ZONAL"
    disk_autoresize   = true

    # ... and Google Cloud itself refuses deletion from any client (console, gcloud).
    deletion_protection_enabled = true

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = var.backup_start_time
      transaction_log_retention_days = 7

      backup_retention_settings {
        retained_backups = var.backup_retained_count
        retention_unit   = "COUNT"
      }
    }

    ip_configuration {
      # A public IP with no authorized network accepts only the Cloud SQL Auth Proxy
      # and connectors, which are authorised by IAM (roles/cloudsql.client) and
      # encrypt every connection. Direct connections must use SSL.
      ipv4_enabled = true
      ssl_mode     = "ENCRYPTED_ONLY"

      dynamic "authorized_networks" {
        for_each = var.authorized_networks
        content {
          name  = authorized_networks.value.name
          value = authorized_networks.value.cidr
        }
      }
    }

    maintenance_window {
      day  = 7 # Sunday
      hour = 4
    }
  }

  depends_on = [google_project_service.required]
}

resource "google_sql_database" "mlflow" {
  name     = var.database_name
  instance = google_sql_database_instance.mlflow.name
}

resource "random_password" "database" {
  length  = 32
  special = false # avoids quoting trouble in connection URIs
}

resource "google_sql_user" "mlflow" {
  name     = var.database_user
  instance = google_sql_database_instance.mlflow.name
  password = local.database_password
  # PostgreSQL cannot drop a role that still owns MLflow's tables: leave it to the
  # instance's own lifecycle instead of failing `terraform destroy`.
  deletion_policy = "ABANDON"
}

resource "google_secret_manager_secret" "database_password" {
  secret_id = "${var.instance_name}-${replace(var.database_user, "_", "-")}-password"

  replication {
    auto {}
  }

  depends_on = [google_project_service.required]
}

resource "google_secret_manager_secret_version" "database_password" {
  secret      = google_secret_manager_secret.database_password.id
  secret_data = local.database_password
}

# ---------------------------------------------------------------- Artifact bucket

resource "google_storage_bucket" "artifacts" {
  name     = local.bucket_name
  location = local.bucket_location

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # Never delete stored models together with the bucket by accident.
  force_destroy = false

  versioning {
    enabled = true
  }

  # Overwritten or deleted artifacts stay recoverable for a while, then go.
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

# ---------------------------------------------------------------- Service account

resource "google_service_account" "pipeline" {
  account_id   = var.service_account_id
  display_name = "MLflow pipeline (GitHub Actions)"
  description  = "Impersonated by GitHub Actions of ${var.github_repository} through Workload Identity Federation."

  depends_on = [google_project_service.required]
}

# Connect through the Cloud SQL Auth Proxy (cloudsql.instances.connect / get).
resource "google_project_iam_member" "pipeline_cloudsql_client" {
  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = local.pipeline_member
}

# Read and write artifacts in this bucket only, not in the rest of the project.
resource "google_storage_bucket_iam_member" "pipeline_artifacts" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectAdmin"
  member = local.pipeline_member
}

# ---------------------------------------------------------------- Workload Identity Federation

resource "google_iam_workload_identity_pool" "github" {
  workload_identity_pool_id = var.workload_identity_pool_id
  display_name              = "GitHub Actions"
  description               = "OIDC identities of GitHub Actions runs of ${var.github_repository}."

  depends_on = [google_project_service.required]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = var.workload_identity_provider_id
  display_name                       = "GitHub OIDC"
  description                        = "GitHub Actions tokens of repository id ${var.github_repository_id} only."

  attribute_mapping = {
    "google.subject"                = "assertion.sub"
    "attribute.repository"          = "assertion.repository"
    "attribute.repository_id"       = "assertion.repository_id"
    "attribute.repository_owner_id" = "assertion.repository_owner_id"
    "attribute.ref"                 = "assertion.ref"
    "attribute.event_name"          = "assertion.event_name"
  }

  # GitHub uses one issuer for every repository on github.com: without this condition
  # any repository could present a valid token. Numeric ids, unlike names, cannot be
  # taken over after a rename or deletion.
  attribute_condition = "assertion.repository_id == '${var.github_repository_id}' && assertion.repository_owner_id == '${var.github_repository_owner_id}'"

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

# Only identities from this repository may impersonate the pipeline's account.
resource "google_service_account_iam_member" "pipeline_workload_identity_user" {
  service_account_id = google_service_account.pipeline.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/attribute.repository_id/${var.github_repository_id}"
}
