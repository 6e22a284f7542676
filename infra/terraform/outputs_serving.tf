# What the workflows need for the images, the serving service and the monitoring job.
# `terraform output serving_github_variables` and `monitoring_github_variables` print them
# under the names .github/workflows/pipeline.yml and monitor.yml read.

output "image_repository" {
  description = "Where the images go: REGION-docker.pkg.dev/PROJECT/REPOSITORY (production environment variable IMAGE_REPOSITORY)."
  value       = local.image_repository
}

output "serving_service_account" {
  description = "Email of the service account the serving service runs as."
  value       = google_service_account.serving.email
}

output "serving_service" {
  description = "Name of the Cloud Run service (production environment variable SERVING_SERVICE); null until serving_image is set."
  value       = local.serving_enabled ? google_cloud_run_v2_service.serving[0].name : null
}

output "serving_url" {
  description = "URL of the service; callers send an identity token (gcloud auth print-identity-token)."
  value       = local.serving_enabled ? google_cloud_run_v2_service.serving[0].uri : null
}

output "serving_database_user" {
  description = "The serving account's IAM database user name (created with gcloud and granted privileges as README.md says)."
  value       = local.serving_database_user
}

output "monitoring_service_account" {
  description = "Email of the read-only service account of the monitoring workflow (monitoring environment variable GCP_MONITORING_SERVICE_ACCOUNT)."
  value       = google_service_account.monitoring.email
}

output "monitoring_database_user" {
  description = "The monitoring account's IAM database user name (created with gcloud and granted privileges as README.md says)."
  value       = local.monitoring_database_user
}

output "monitoring_subject" {
  description = "The only OIDC subject that may impersonate the monitoring account: jobs in the monitoring environment."
  value       = local.monitoring_subject
}

output "serving_github_variables" {
  description = "Variables of the production environment for the image and deploy-serving jobs, by name."
  value = {
    IMAGE_REPOSITORY = local.image_repository
    SERVING_SERVICE  = var.serving_service_name
    SERVING_REGION   = var.region
  }
}

output "monitoring_github_variables" {
  description = "Variables of the monitoring environment for .github/workflows/monitor.yml, by name."
  value = {
    GCP_MONITORING_WORKLOAD_IDENTITY_PROVIDER = google_iam_workload_identity_pool_provider.github_monitoring.name
    GCP_MONITORING_SERVICE_ACCOUNT            = google_service_account.monitoring.email
    CLOUD_SQL_CONNECTION_NAME                 = google_sql_database_instance.mlflow.connection_name
    POSTGRES_DB                               = google_sql_database.mlflow.name
    MONITORING_DATABASE_USER                  = local.monitoring_database_user
  }
}
