# Inputs of the Kubernetes path (gke.tf, argo.tf): a GKE Autopilot cluster that runs the flows'
# steps as pods through Metaflow's Argo Workflows integration. Off by default: nothing here is
# created, and nothing is charged, until enable_gke = true.

variable "enable_gke" {
  description = "Create the GKE Autopilot cluster, Argo Workflows, the Metaflow datastore bucket and the steps' service accounts (README.md, \"Running on Kubernetes\"). Costs money while the cluster exists."
  type        = bool
  default     = false
}

variable "gke_cluster_name" {
  description = "Name of the GKE Autopilot cluster (regional, in var.region)."
  type        = string
  default     = "operational-ml"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$", var.gke_cluster_name))
    error_message = "gke_cluster_name must be 1-40 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "gke_release_channel" {
  description = "GKE release channel: Google upgrades the control plane and nodes within it (REGULAR is the default balance of new and proven)."
  type        = string
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.gke_release_channel)
    error_message = "gke_release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "gke_network" {
  description = "VPC network of the cluster (the project's `default` network unless you have your own)."
  type        = string
  default     = "default"
}

variable "gke_subnetwork" {
  description = "Subnetwork of the cluster in var.region; null lets GKE use the network's subnet in that region."
  type        = string
  nullable    = true
  default     = null
}

variable "metaflow_namespace" {
  description = "Kubernetes namespace of the flows' pods (METAFLOW_KUBERNETES_NAMESPACE in infra/metaflow/config_gke.json)."
  type        = string
  default     = "operational-ml"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.metaflow_namespace))
    error_message = "metaflow_namespace must be a Kubernetes name: lowercase letters, digits and hyphens."
  }
}

variable "metaflow_kubernetes_service_account" {
  description = "Kubernetes service account the steps run as (METAFLOW_KUBERNETES_SERVICE_ACCOUNT); bound through Workload Identity to the Google service account metaflow_service_account_id."
  type        = string
  default     = "metaflow-steps"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.metaflow_kubernetes_service_account))
    error_message = "metaflow_kubernetes_service_account must be a Kubernetes name: lowercase letters, digits and hyphens."
  }
}

variable "metaflow_service_account_id" {
  description = "Account id of the Google service account the steps act as (no key; Workload Identity only)."
  type        = string
  default     = "metaflow-steps"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.metaflow_service_account_id))
    error_message = "metaflow_service_account_id must be 6-30 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "metaflow_datastore_bucket_name" {
  description = "Bucket of Metaflow's datastore (artifacts and code packages). Leave unset for PROJECT_ID-metaflow; METAFLOW_DATASTORE_SYSROOT_GS is gs://BUCKET/metaflow."
  type        = string
  nullable    = true
  default     = null

  validation {
    condition     = var.metaflow_datastore_bucket_name == null || can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", coalesce(var.metaflow_datastore_bucket_name, "ok")))
    error_message = "metaflow_datastore_bucket_name must be 3-63 characters: lowercase letters, digits, dots, hyphens, underscores."
  }
}

variable "metaflow_datastore_retention_days" {
  description = "Days to keep Metaflow artifacts and code packages; older runs can no longer be resumed or inspected after that."
  type        = number
  default     = 180

  validation {
    condition     = var.metaflow_datastore_retention_days >= 7
    error_message = "metaflow_datastore_retention_days must be at least 7."
  }
}

variable "argo_workflows_chart_version" {
  description = "Version of the argo-workflows Helm chart (argoproj/argo-helm). 0.47.5 is Argo Workflows v3.7.11, the last 3.x line, which Metaflow 2.19 targets."
  type        = string
  default     = "0.47.5"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.argo_workflows_chart_version))
    error_message = "argo_workflows_chart_version must be an exact chart version such as 0.47.5, never a range."
  }
}

variable "argo_namespace" {
  description = "Kubernetes namespace of the Argo Workflows controller and server."
  type        = string
  default     = "argo"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.argo_namespace))
    error_message = "argo_namespace must be a Kubernetes name: lowercase letters, digits and hyphens."
  }
}

variable "argo_events_chart_version" {
  description = "Version of the argo-events Helm chart (argoproj/argo-helm); 2.4.22 is Argo Events v1.9.10."
  type        = string
  default     = "2.4.22"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.argo_events_chart_version))
    error_message = "argo_events_chart_version must be an exact chart version such as 2.4.22, never a range."
  }
}

variable "argo_events_namespace" {
  description = "Kubernetes namespace of the Argo Events controller."
  type        = string
  default     = "argo-events"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.argo_events_namespace))
    error_message = "argo_events_namespace must be a Kubernetes name: lowercase letters, digits and hyphens."
  }
}

variable "argo_deployer_service_account_id" {
  description = "Account id of the Google service account the pipeline workflow's argo job acts as (deploy the flows to Argo and start TuningFlow in metaflow_namespace; argo_deployer.tf)."
  type        = string
  default     = "argo-deployer"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.argo_deployer_service_account_id))
    error_message = "argo_deployer_service_account_id must be 6-30 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "metaflow_metadata_image" {
  description = "Image of Metaflow's metadata service (metaflow_metadata.tf) by digest, e.g. netflixoss/metaflow_metadata_service:v2.5.1@sha256:... (docker buildx imagetools inspect netflixoss/metaflow_metadata_service:v2.5.1 prints it). Required once enable_gke = true: a tag on Docker Hub can move, a digest cannot."
  type        = string
  nullable    = true
  default     = null

  validation {
    condition     = var.metaflow_metadata_image == null || can(regex("^[a-z0-9][a-z0-9./_-]*(:v?[0-9]+\\.[0-9]+\\.[0-9]+)?@sha256:[0-9a-f]{64}$", coalesce(var.metaflow_metadata_image, "x")))
    error_message = "metaflow_metadata_image must be pinned by digest: IMAGE[:vX.Y.Z]@sha256:<64 hex>, never a bare or moving tag."
  }
}

variable "metaflow_metadata_proxy_image" {
  description = "The Cloud SQL Auth Proxy sidecar of the metadata service by digest, e.g. gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.1@sha256:... (docker buildx imagetools inspect prints it). Required once enable_gke = true."
  type        = string
  nullable    = true
  default     = null

  validation {
    condition     = var.metaflow_metadata_proxy_image == null || can(regex("/cloud-sql-proxy(:[0-9]+\\.[0-9]+\\.[0-9]+)?@sha256:[0-9a-f]{64}$", coalesce(var.metaflow_metadata_proxy_image, "x")))
    error_message = "metaflow_metadata_proxy_image must name the cloud-sql-proxy image by digest: .../cloud-sql-proxy[:X.Y.Z]@sha256:<64 hex>."
  }
}

variable "metaflow_metadata_service_name" {
  description = "Name of the metadata service's Deployment, ClusterIP Service and Kubernetes service account in metaflow_namespace; METAFLOW_SERVICE_URL is http://NAME.NAMESPACE.svc:8080."
  type        = string
  default     = "metaflow-metadata"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", var.metaflow_metadata_service_name))
    error_message = "metaflow_metadata_service_name must be a Kubernetes service name: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "metaflow_metadata_service_account_id" {
  description = "Account id of the Google service account the metadata service acts as (Workload Identity) and logs in to its database as (IAM database user); no key."
  type        = string
  default     = "metaflow-metadata"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.metaflow_metadata_service_account_id))
    error_message = "metaflow_metadata_service_account_id must be 6-30 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "metaflow_metadata_database_name" {
  description = "Database of the metadata service on the MLflow Cloud SQL instance."
  type        = string
  default     = "metaflow"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.metaflow_metadata_database_name))
    error_message = "metaflow_metadata_database_name must be a plain PostgreSQL name: lowercase letters, digits and underscores."
  }
}
