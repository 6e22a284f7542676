# The cloud side of the pipeline: PostgreSQL for MLflow metadata, a bucket for MLflow
# artifacts (and one for its access logs), a least-privilege service account, and
# Workload Identity Federation so that only the `production` environment of ONE
# repository, on `main`, can act as that account without any key.

locals {
  github_repository      = "${var.github_owner}/${var.github_repository_name}"
  bucket_name            = coalesce(var.bucket_name, "${var.project_id}-mlflow-artifacts")
  access_log_bucket_name = "${var.project_id}-mlflow-access-logs"
  bucket_location        = upper(coalesce(var.bucket_location, var.region))
  pipeline_member        = "serviceAccount:${google_service_account.pipeline.email}"
  # The `sub` claim of a job that runs in the `production` environment (GitHub's default
  # subject template). Spelled out again in attribute_condition, where checkov reads it.
  production_subject = "repo:${local.github_repository}:environment:production"
}

# ---------------------------------------------------------------- APIs

resource "google_project_service" "required" {
  for_each = toset([
    "sqladmin.googleapis.com",       # Cloud SQL, and the Auth Proxy's connection API
    "storage.googleapis.com",        # the artifact bucket
    "iam.googleapis.com",            # service account and Workload Identity pool
    "iamcredentials.googleapis.com", # short-lived tokens for the impersonated account
    "sts.googleapis.com",            # exchanging GitHub's OIDC token
    "secretmanager.googleapis.com",  # the database password's home
  ])

  service = each.value
  # Turning an API off on destroy could break other workloads in the project.
  disable_on_destroy = false
}

# ---------------------------------------------------------------- Cloud SQL

resource "google_sql_database_instance" "mlflow" {
  #checkov:skip=CKV_GCP_60:GitHub-hosted runners have no VPC; the public IP has no authorized network and admits only IAM-authorised Cloud SQL connectors (connector_enforcement = REQUIRED)
  #checkov:skip=CKV_GCP_79:PostgreSQL 15 is what tests/integration runs MLflow's migrations on; upgrade the two together
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

    # Every connection goes through the Cloud SQL Auth Proxy or a language connector,
    # which IAM authorises (cloudsql.instances.connect) and which encrypts with a
    # per-client certificate. Direct connections to the IP are refused.
    connector_enforcement = "REQUIRED"

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
      # No authorized network: with connector_enforcement the public IP serves the
      # connectors only. Connectors present client certificates, so requiring them
      # costs nothing and refuses any other TLS client.
      ipv4_enabled = true
      ssl_mode     = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
    }

    # IAM database authentication for people (e.g. an administrator's own account,
    # `cloud-sql-proxy --auto-iam-authn`); the pipeline logs in as the plain role
    # that infra/postgres/init.sql creates.
    database_flags {
      name  = "cloudsql.iam_authentication"
      value = "on"
    }

    # Who connected, from where, what changed the schema or roles, and what failed.
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "log_duration"
      value = "on"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    # pgAudit records role and privilege changes (GRANT, ALTER ROLE). Run
    # `CREATE EXTENSION pgaudit;` once in the MLflow database (infra/terraform/README.md).
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
    database_flags {
      name  = "pgaudit.log"
      value = "role"
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

# No google_sql_user here on purpose: a user created through the Cloud SQL API becomes a
# member of cloudsqlsuperuser (every database, CREATEROLE, CREATEDB). The MLflow role is
# created by infra/postgres/init.sql (`make db_init`) with only the grants MLflow needs.
# Its password never passes through Terraform, so it is not in the state either: this
# secret is where the operator keeps it (versions are added with gcloud, see README.md).
resource "google_secret_manager_secret" "database_password" {
  secret_id = "${var.instance_name}-${replace(var.database_user, "_", "-")}-password"

  replication {
    auto {}
  }

  depends_on = [google_project_service.required]
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

  # Hourly usage logs of every request, into the bucket below.
  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = "artifacts"
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

resource "google_storage_bucket" "access_logs" {
  #checkov:skip=CKV_GCP_62:this bucket receives the artifact bucket's usage logs; logging it into itself would never end
  name     = local.access_log_bucket_name
  location = local.bucket_location

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # A deleted or overwritten log object stays recoverable until it expires anyway.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = var.access_log_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.access_log_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.required]
}

# Cloud Storage writes usage logs as this Google-managed group; it can create objects in
# the log bucket and nothing else.
resource "google_storage_bucket_iam_member" "access_logs_writer" {
  bucket = google_storage_bucket.access_logs.name
  role   = "roles/storage.objectCreator"
  member = "group:cloud-storage-analytics@google.com"
}

# ---------------------------------------------------------------- Service account

resource "google_service_account" "pipeline" {
  account_id   = var.service_account_id
  display_name = "MLflow pipeline (GitHub Actions, production)"
  description  = "Impersonated by the production environment of ${local.github_repository} on main, through Workload Identity Federation."

  depends_on = [google_project_service.required]
}

# Connect through the Cloud SQL Auth Proxy (cloudsql.instances.connect / get) to this
# instance only: the IAM condition limits the project-level grant to one resource name.
resource "google_project_iam_member" "pipeline_cloudsql_client" {
  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = local.pipeline_member

  condition {
    title       = "only-${var.instance_name}"
    description = "Cloud SQL client on the MLflow instance only."
    expression  = "resource.type == 'sqladmin.googleapis.com/Instance' && resource.name == 'projects/${var.project_id}/instances/${google_sql_database_instance.mlflow.name}'"
  }
}

# Read, write and delete artifacts in this bucket only; unlike objectAdmin, objectUser
# cannot change who has access (no setIamPolicy).
resource "google_storage_bucket_iam_member" "pipeline_artifacts" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectUser"
  member = local.pipeline_member
}

# ---------------------------------------------------------------- Workload Identity Federation

resource "google_iam_workload_identity_pool" "github" {
  workload_identity_pool_id = var.workload_identity_pool_id
  display_name              = "GitHub Actions"
  description               = "OIDC identities of GitHub Actions runs of ${local.github_repository}."

  depends_on = [google_project_service.required]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = var.workload_identity_provider_id
  display_name                       = "GitHub OIDC (production)"
  description                        = "Production jobs of repository id ${var.github_repository_id} on main only."

  attribute_mapping = {
    "google.subject"                = "assertion.sub"
    "attribute.repository"          = "assertion.repository"
    "attribute.repository_id"       = "assertion.repository_id"
    "attribute.repository_owner_id" = "assertion.repository_owner_id"
    "attribute.ref"                 = "assertion.ref"
    "attribute.event_name"          = "assertion.event_name"
  }

  # GitHub uses one issuer for every repository on github.com, so the condition is what
  # keeps everyone else out. It admits a token only when all of these hold:
  # - this repository and owner, by numeric id (ids, unlike names, cannot be taken over
  #   after a rename or deletion);
  # - a job in the `production` environment (the subject), which GitHub lets run on
  #   `main` only (its deployment branch rule);
  # - the ref is main, whatever the environment's rules say;
  # - the run was started by a push, the schedule or a manual dispatch: never by a pull
  #   request, whose code is not yet reviewed.
  attribute_condition = "assertion.repository_id == '${var.github_repository_id}' && assertion.repository_owner_id == '${var.github_repository_owner_id}' && assertion.sub == 'repo:${var.github_owner}/${var.github_repository_name}:environment:production' && assertion.ref == 'refs/heads/main' && assertion.event_name in ['push', 'schedule', 'workflow_dispatch']"

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

# Only the production subject may impersonate the pipeline's account, even if the pool
# ever gets another provider with a looser condition.
resource "google_service_account_iam_member" "pipeline_workload_identity_user" {
  service_account_id = google_service_account.pipeline.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/subject/${local.production_subject}"
}
