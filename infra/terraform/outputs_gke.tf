# What infra/metaflow/config_gke.json needs once enable_gke = true (null while it is false).

output "gke_cluster" {
  description = "Name of the GKE Autopilot cluster."
  value       = one(google_container_cluster.metaflow[*].name)
}

output "gke_credentials_command" {
  description = "The command that points kubectl (and make deploy-argo) at the cluster, through its DNS endpoint."
  value       = var.enable_gke ? "gcloud container clusters get-credentials ${var.gke_cluster_name} --region ${var.region} --project ${var.project_id} --dns-endpoint" : null
}

output "metaflow_datastore_root" {
  description = "METAFLOW_DATASTORE_SYSROOT_GS of the GKE profile."
  value       = var.enable_gke ? "gs://${google_storage_bucket.metaflow_datastore[0].name}/metaflow" : null
}

output "metaflow_service_account" {
  description = "Email of the Google service account the steps act as through Workload Identity."
  value       = one(google_service_account.metaflow_steps[*].email)
}

output "metaflow_profile" {
  description = "Values of infra/metaflow/config_gke.json that Terraform decides (the image digest comes from the image build)."
  value = var.enable_gke ? {
    METAFLOW_DATASTORE_SYSROOT_GS       = "gs://${google_storage_bucket.metaflow_datastore[0].name}/metaflow"
    METAFLOW_DEFAULT_METADATA           = "service"
    METAFLOW_SERVICE_URL                = local.metaflow_service_url
    METAFLOW_SERVICE_INTERNAL_URL       = local.metaflow_service_url
    METAFLOW_KUBERNETES_NAMESPACE       = var.metaflow_namespace
    METAFLOW_KUBERNETES_SERVICE_ACCOUNT = var.metaflow_kubernetes_service_account
  } : null
}

output "argo_github_variables" {
  description = "Variables of the production environment for the pipeline workflow's argo job (engine argo), by name; the first two are null while enable_gke is false."
  value = {
    GCP_ARGO_SERVICE_ACCOUNT = one(google_service_account.argo_deployer[*].email)
    GKE_CLUSTER              = one(google_container_cluster.metaflow[*].name)
    GKE_LOCATION             = var.region
    GKE_PROJECT              = var.project_id
  }
}

output "metaflow_service_url" {
  description = "Address of Metaflow's metadata service inside the cluster (METAFLOW_SERVICE_URL and METAFLOW_SERVICE_INTERNAL_URL of the GKE profile); a ClusterIP Service, reachable from the flows' namespace only."
  value       = var.enable_gke ? local.metaflow_service_url : null
}

output "metaflow_metadata_database_user" {
  description = "The metadata service's IAM database user (created with gcloud and given the metaflow database's schema as README.md says)."
  value       = var.enable_gke ? local.metaflow_metadata_database_user : null
}
