# Inputs of the image repository (artifact_registry.tf), the serving service (serving.tf) and
# the monitoring identity (monitoring.tf). All have defaults; serving_image stays unset until
# the first image is pushed.

variable "image_repository_id" {
  description = "Id of the Artifact Registry Docker repository for the project's images."
  type        = string
  default     = "operational-ml"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", var.image_repository_id))
    error_message = "image_repository_id must be lowercase letters, digits and hyphens, starting with a letter (at most 63)."
  }
}

variable "image_keep_count" {
  description = "How many of the most recent versions of each image the repository's cleanup policy always keeps."
  type        = number
  default     = 20

  validation {
    condition     = var.image_keep_count >= 1
    error_message = "image_keep_count must be at least 1."
  }
}

variable "serving_image" {
  description = "The serve image by digest (REGION-docker.pkg.dev/PROJECT/REPOSITORY/serve@sha256:...), printed by the pipeline workflow's image job. Unset (null): no service yet. After creation the deploy-serving job moves it."
  type        = string
  nullable    = true
  default     = null

  validation {
    condition     = var.serving_image == null || can(regex("^[a-z0-9.-]+-docker\\.pkg\\.dev/[^@:]+@sha256:[0-9a-f]{64}$", coalesce(var.serving_image, "x")))
    error_message = "serving_image must be an Artifact Registry image by digest: REGION-docker.pkg.dev/PROJECT/REPOSITORY/serve@sha256:<64 hex>, never a tag."
  }
}

variable "serving_service_name" {
  description = "Name of the Cloud Run service."
  type        = string
  default     = "mlflow-serving"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$", var.serving_service_name))
    error_message = "serving_service_name must be lowercase letters, digits and hyphens, starting with a letter (at most 49)."
  }
}

variable "serving_service_account_id" {
  description = "Account id of the service account the serving service runs as."
  type        = string
  default     = "mlflow-serving"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.serving_service_account_id))
    error_message = "serving_service_account_id must be 6-30 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "serving_model_name" {
  description = "Registered model whose `champion` the service serves."
  type        = string
  default     = "eeg-emotion-svm"
}

variable "cloud_sql_proxy_image" {
  description = "The Cloud SQL Auth Proxy sidecar of the serving service, at an exact version (or by digest)."
  type        = string
  default     = "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.1"

  validation {
    condition     = can(regex("cloud-sql-proxy(:[0-9]+\\.[0-9]+\\.[0-9]+)?(@sha256:[0-9a-f]{64})?$", var.cloud_sql_proxy_image)) && can(regex("(:[0-9]+\\.[0-9]+\\.[0-9]+|@sha256:[0-9a-f]{64})$", var.cloud_sql_proxy_image))
    error_message = "cloud_sql_proxy_image must name the proxy at an exact version (:2.14.1) or by digest (@sha256:...), never latest."
  }
}

variable "serving_ingress" {
  description = "Where requests may come from: INGRESS_TRAFFIC_INTERNAL_ONLY (this project's VPC networks), INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER, or INGRESS_TRAFFIC_ALL. Every request needs an invoker's identity token whatever this says."
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER", "INGRESS_TRAFFIC_ALL"], var.serving_ingress)
    error_message = "serving_ingress must be INGRESS_TRAFFIC_INTERNAL_ONLY, INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER or INGRESS_TRAFFIC_ALL."
  }
}

variable "serving_invokers" {
  description = "Principals allowed to call the service (roles/run.invoker), e.g. [\"serviceAccount:client@PROJECT.iam.gserviceaccount.com\", \"group:ml-clients@example.com\"]. Never allUsers or allAuthenticatedUsers."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.serving_invokers : can(regex("^(user|serviceAccount|group|domain|principal|principalSet):.+", m))])
    error_message = "serving_invokers must name principals (user:, serviceAccount:, group:, domain:, principal:, principalSet:); allUsers and allAuthenticatedUsers are refused."
  }
}

variable "serving_min_instances" {
  description = "Instances kept warm (0: scale to zero; the first request then waits for the model to load)."
  type        = number
  default     = 0

  validation {
    condition     = var.serving_min_instances >= 0
    error_message = "serving_min_instances must be 0 or more."
  }
}

variable "serving_max_instances" {
  description = "Most instances at once: the ceiling on cost and on connections to the database."
  type        = number
  default     = 3

  validation {
    condition     = var.serving_max_instances >= 1 && var.serving_max_instances <= 100
    error_message = "serving_max_instances must be between 1 and 100."
  }
}

variable "serving_concurrency" {
  description = "Requests one instance handles at once."
  type        = number
  default     = 8

  validation {
    condition     = var.serving_concurrency >= 1 && var.serving_concurrency <= 1000
    error_message = "serving_concurrency must be between 1 and 1000."
  }
}

variable "serving_cpu" {
  description = "CPUs of one instance (Cloud Run limit, e.g. \"1\", \"2\")."
  type        = string
  default     = "2"
}

variable "serving_memory" {
  description = "Memory of one instance (Cloud Run limit, e.g. \"2Gi\"); the runtime with TensorFlow needs about 2 GiB."
  type        = string
  default     = "4Gi"
}

variable "serving_poll_s" {
  description = "Seconds between the service's looks at the `champion` alias (SERVE_POLL_S)."
  type        = number
  default     = 30

  validation {
    condition     = var.serving_poll_s >= 1
    error_message = "serving_poll_s must be at least 1."
  }
}

variable "monitoring_service_account_id" {
  description = "Account id of the read-only service account the monitoring workflow impersonates."
  type        = string
  default     = "mlflow-monitoring"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.monitoring_service_account_id))
    error_message = "monitoring_service_account_id must be 6-30 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "monitoring_workload_identity_provider_id" {
  description = "Id of the OIDC provider, in the GitHub pool, that admits the monitoring environment's jobs only."
  type        = string
  default     = "github-oidc-monitoring"

  validation {
    condition     = can(regex("^[a-z0-9-]{4,32}$", var.monitoring_workload_identity_provider_id)) && !startswith(var.monitoring_workload_identity_provider_id, "gcp-")
    error_message = "monitoring_workload_identity_provider_id must be 4-32 lowercase letters, digits or hyphens and must not start with gcp-."
  }
}
