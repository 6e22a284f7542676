# The identity of the scheduled drift check (.github/workflows/monitor.yml): a service account
# of its own, reached only by jobs in the GitHub environment `monitoring` on main, with no
# promotion rights. It reads the champion (registry rows, model files, training reference)
# and the prediction log, and records its own monitoring run; it cannot move an alias,
# register a version, or change or delete a stored file. The retrain it may call for is
# started by GitHub (workflow_dispatch with the job's GITHUB_TOKEN), never with this account.
#
# Its database login is IAM database authentication (cloud-sql-proxy --auto-iam-authn): no
# password exists, so the monitoring environment holds no secret at all. The PostgreSQL
# privileges of that login (SELECT on MLflow's tables, rows of runs only, the prediction log's
# reader role) are granted once by the operator (README.md, "Monitoring identity").

locals {
  monitoring_member = "serviceAccount:${google_service_account.monitoring.email}"
  # The `sub` claim of a job in the `monitoring` environment: not production's.
  monitoring_subject = "repo:${local.github_repository}:environment:monitoring"
  # Cloud SQL names an IAM service-account user by its email without .gserviceaccount.com.
  # The user itself is made with gcloud (README.md): like main.tf, Terraform creates no
  # database user; an IAM user has no password and no privilege until one is granted.
  monitoring_database_user = trimsuffix(google_service_account.monitoring.email, ".gserviceaccount.com")
}

resource "google_service_account" "monitoring" {
  account_id   = var.monitoring_service_account_id
  display_name = "MLflow drift monitoring (GitHub Actions, read-only)"
  description  = "Impersonated by the monitoring environment of ${local.github_repository} on main: reads the champion and the prediction log, no promotion rights."

  depends_on = [google_project_service.required]
}

# A provider of its own in the same pool: it admits only the monitoring environment's jobs
# of this repository on main, started by the schedule or by hand. The production provider
# (main.tf) admits only production's subject, so neither environment can use the other's.
resource "google_iam_workload_identity_pool_provider" "github_monitoring" {
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = var.monitoring_workload_identity_provider_id
  display_name                       = "GitHub OIDC (monitoring)"
  description                        = "Monitoring jobs of repository id ${var.github_repository_id} on main only."

  attribute_mapping = {
    "google.subject"                = "assertion.sub"
    "attribute.repository"          = "assertion.repository"
    "attribute.repository_id"       = "assertion.repository_id"
    "attribute.repository_owner_id" = "assertion.repository_owner_id"
    "attribute.ref"                 = "assertion.ref"
    "attribute.event_name"          = "assertion.event_name"
  }

  attribute_condition = "assertion.repository_id == '${var.github_repository_id}' && assertion.repository_owner_id == '${var.github_repository_owner_id}' && assertion.sub == 'repo:${var.github_owner}/${var.github_repository_name}:environment:monitoring' && assertion.ref == 'refs/heads/main' && assertion.event_name in ['schedule', 'workflow_dispatch']"

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

# Only the monitoring subject may impersonate this account.
resource "google_service_account_iam_member" "monitoring_workload_identity_user" {
  service_account_id = google_service_account.monitoring.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/subject/${local.monitoring_subject}"
}

# Read the model files and the training reference.
resource "google_storage_bucket_iam_member" "monitoring_reads_artifacts" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectViewer"
  member = local.monitoring_member
}

# Add the monitoring run's report files. objectCreator creates new objects only: replacing or
# deleting one needs storage.objects.delete, which it lacks, so no model file can be changed.
resource "google_storage_bucket_iam_member" "monitoring_adds_reports" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectCreator"
  member = local.monitoring_member
}

# Connect to the MLflow instance only (Cloud SQL Auth Proxy), and log in to it as its IAM
# database user (cloudsql.instances.login) only.
resource "google_project_iam_member" "monitoring_cloudsql_client" {
  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = local.monitoring_member

  condition {
    title       = "monitoring-only-${var.instance_name}"
    description = "On the MLflow instance only."
    expression  = "resource.type == 'sqladmin.googleapis.com/Instance' && resource.name == 'projects/${var.project_id}/instances/${google_sql_database_instance.mlflow.name}'"
  }
}

resource "google_project_iam_member" "monitoring_cloudsql_instance_user" {
  project = var.project_id
  role    = "roles/cloudsql.instanceUser"
  member  = local.monitoring_member

  condition {
    title       = "monitoring-only-${var.instance_name}"
    description = "On the MLflow instance only."
    expression  = "resource.type == 'sqladmin.googleapis.com/Instance' && resource.name == 'projects/${var.project_id}/instances/${google_sql_database_instance.mlflow.name}'"
  }
}
