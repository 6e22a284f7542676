# Inputs. Only project_id and the GitHub repository's owner, name and ids are required; see
# terraform.tfvars.example and README.md for how to find them.

variable "project_id" {
  description = "Google Cloud project id that holds every resource (e.g. my-mlops-project)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be 6-30 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Region of the Cloud SQL instance (and of the bucket unless bucket_location is set)."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as us-central1 or europe-west1."
  }
}

variable "github_owner" {
  description = "Owner (user or organisation) of the GitHub repository, exactly as GitHub spells it. Part of the production subject repo:OWNER/NAME:environment:production that the Workload Identity condition checks."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?$", var.github_owner))
    error_message = "github_owner must be a GitHub user or organisation name, e.g. octo-org."
  }
}

variable "github_repository_name" {
  description = "Name of the GitHub repository (without the owner), exactly as GitHub spells it."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,100}$", var.github_repository_name))
    error_message = "github_repository_name must be a repository name such as Operational_ML."
  }
}

variable "github_repository_id" {
  description = "Numeric id of the GitHub repository (gh api repos/OWNER/NAME --jq .id). Ids survive renames and cannot be re-registered, unlike names."
  type        = string

  validation {
    condition     = can(regex("^[0-9]+$", var.github_repository_id))
    error_message = "github_repository_id must be the numeric repository id, e.g. 123456789."
  }
}

variable "github_repository_owner_id" {
  description = "Numeric id of the repository owner, user or organisation (gh api repos/OWNER/NAME --jq .owner.id)."
  type        = string

  validation {
    condition     = can(regex("^[0-9]+$", var.github_repository_owner_id))
    error_message = "github_repository_owner_id must be the numeric owner id, e.g. 987654."
  }
}

variable "instance_name" {
  description = "Name of the Cloud SQL for PostgreSQL instance. A deleted name cannot be reused for about a week."
  type        = string
  default     = "mlflow-postgres"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,61}[a-z0-9]$", var.instance_name))
    error_message = "instance_name must start with a letter and hold only lowercase letters, digits and hyphens (at most 63)."
  }
}

variable "database_tier" {
  description = "Machine tier of the Cloud SQL instance. db-f1-micro is enough for MLflow metadata; shared-core tiers have no SLA."
  type        = string
  default     = "db-f1-micro"

  validation {
    condition     = can(regex("^db-", var.database_tier))
    error_message = "database_tier must be a Cloud SQL tier such as db-f1-micro, db-g1-small or db-custom-1-3840."
  }
}

variable "high_availability" {
  description = "Run the instance with a standby in a second zone (REGIONAL). Doubles the cost."
  type        = bool
  default     = false
}

variable "database_name" {
  description = "Name of the MLflow database inside the instance."
  type        = string
  default     = "mlflowdata"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.database_name))
    error_message = "database_name must be a lowercase PostgreSQL identifier (letters, digits, underscores)."
  }
}

variable "database_user" {
  description = "PostgreSQL role that the MLflow server connects as. Created by infra/postgres/init.sql (make db_init), not by Terraform, so that it is not a member of cloudsqlsuperuser."
  type        = string
  default     = "mlflowdata"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.database_user))
    error_message = "database_user must be a lowercase PostgreSQL identifier (letters, digits, underscores)."
  }
}

variable "backup_start_time" {
  description = "Start of the daily backup window, HH:MM in UTC."
  type        = string
  default     = "03:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.backup_start_time))
    error_message = "backup_start_time must be HH:MM in 24-hour UTC, e.g. 03:00."
  }
}

variable "backup_retained_count" {
  description = "How many daily backups to keep."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retained_count >= 1 && var.backup_retained_count <= 365
    error_message = "backup_retained_count must be between 1 and 365."
  }
}

variable "bucket_name" {
  description = "Name of the artifact bucket. Leave unset to use PROJECT_ID-mlflow-artifacts. Bucket names are global."
  type        = string
  nullable    = true
  default     = null

  validation {
    condition     = var.bucket_name == null || can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", coalesce(var.bucket_name, "ok")))
    error_message = "bucket_name must be 3-63 characters: lowercase letters, digits, dots, hyphens, underscores."
  }
}

variable "bucket_location" {
  description = "Location of the artifact bucket (a region or multi-region such as EU). Leave unset to use region."
  type        = string
  nullable    = true
  default     = null
}

variable "artifact_prefix" {
  description = "Folder inside the bucket that MLflow writes artifacts under (MLFLOW_ARTIFACT_ROOT = gs://BUCKET/PREFIX)."
  type        = string
  default     = "mlflow"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.artifact_prefix))
    error_message = "artifact_prefix must be a relative path without leading or trailing slashes, e.g. mlflow."
  }
}

variable "access_log_retention_days" {
  description = "Days to keep the artifact bucket's usage logs (bucket PROJECT_ID-mlflow-access-logs)."
  type        = number
  default     = 365

  validation {
    condition     = var.access_log_retention_days >= 1
    error_message = "access_log_retention_days must be at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days to keep overwritten or deleted artifact versions before they are removed for good."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "service_account_id" {
  description = "Account id of the service account that GitHub Actions impersonates."
  type        = string
  default     = "mlflow-pipeline"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.service_account_id))
    error_message = "service_account_id must be 6-30 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "workload_identity_pool_id" {
  description = "Id of the Workload Identity pool for GitHub Actions. A deleted pool id cannot be reused for 30 days."
  type        = string
  default     = "github-actions"

  validation {
    condition     = can(regex("^[a-z0-9-]{4,32}$", var.workload_identity_pool_id)) && !startswith(var.workload_identity_pool_id, "gcp-")
    error_message = "workload_identity_pool_id must be 4-32 lowercase letters, digits or hyphens and must not start with gcp-."
  }
}

variable "workload_identity_provider_id" {
  description = "Id of the OIDC provider for GitHub inside the pool."
  type        = string
  default     = "github-oidc"

  validation {
    condition     = can(regex("^[a-z0-9-]{4,32}$", var.workload_identity_provider_id)) && !startswith(var.workload_identity_provider_id, "gcp-")
    error_message = "workload_identity_provider_id must be 4-32 lowercase letters, digits or hyphens and must not start with gcp-."
  }
}
