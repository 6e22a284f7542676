# What the GitHub workflow needs. `terraform output github_variables` prints them under
# the names that .github/workflows/pipeline.yml reads, as variables of the `production`
# environment.

output "workload_identity_provider" {
  description = "Full resource name of the OIDC provider (production environment variable GCP_WORKLOAD_IDENTITY_PROVIDER)."
  value       = google_iam_workload_identity_pool_provider.github.name
}

output "service_account" {
  description = "Email of the service account GitHub Actions impersonates (production environment variable GCP_SERVICE_ACCOUNT)."
  value       = google_service_account.pipeline.email
}

output "bucket" {
  description = "Name of the artifact bucket."
  value       = google_storage_bucket.artifacts.name
}

output "artifact_root" {
  description = "Where MLflow stores artifacts (production environment variable MLFLOW_ARTIFACT_ROOT)."
  value       = "gs://${google_storage_bucket.artifacts.name}/${var.artifact_prefix}"
}

output "cloud_sql_connection_name" {
  description = "PROJECT:REGION:INSTANCE, what the Cloud SQL Auth Proxy connects to (production environment variable CLOUD_SQL_CONNECTION_NAME)."
  value       = google_sql_database_instance.mlflow.connection_name
}

output "database_name" {
  description = "MLflow database name (production environment variable POSTGRES_DB)."
  value       = google_sql_database.mlflow.name
}

output "database_user" {
  description = "MLflow database role, created by infra/postgres/init.sql (variable POSTGRES_USER)."
  value       = var.database_user
}

output "database_password_secret" {
  description = "Secret Manager secret that keeps the MLflow role's password (copied into the production environment's POSTGRES_PASSWORD secret)."
  value       = google_secret_manager_secret.database_password.secret_id
}

output "access_log_bucket" {
  description = "Bucket that receives the artifact bucket's usage logs."
  value       = google_storage_bucket.access_logs.name
}

output "production_subject" {
  description = "The only OIDC subject that may impersonate the service account: jobs in the production environment."
  value       = local.production_subject
}

output "github_variables" {
  description = "Variables of the production environment for the pipeline workflow, by name."
  value = {
    GCP_WORKLOAD_IDENTITY_PROVIDER = google_iam_workload_identity_pool_provider.github.name
    GCP_SERVICE_ACCOUNT            = google_service_account.pipeline.email
    CLOUD_SQL_CONNECTION_NAME      = google_sql_database_instance.mlflow.connection_name
    MLFLOW_ARTIFACT_ROOT           = "gs://${google_storage_bucket.artifacts.name}/${var.artifact_prefix}"
    POSTGRES_DB                    = google_sql_database.mlflow.name
    POSTGRES_USER                  = var.database_user
  }
}
