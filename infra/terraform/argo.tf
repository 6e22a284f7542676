# Inside the cluster: the flows' namespace, their Kubernetes service account (bound to the
# metaflow-steps Google account through Workload Identity) and Argo Workflows from its Helm chart.
# Providers reach the cluster through its DNS endpoint with gcloud's credential plugin
# (gke-gcloud-auth-plugin): no token or certificate is written to the state.

locals {
  gke_endpoint = try("https://${google_container_cluster.metaflow[0].control_plane_endpoints_config[0].dns_endpoint_config[0].endpoint}", null)
  gke_auth_plugin = {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "gke-gcloud-auth-plugin"
  }
}

provider "kubernetes" {
  host = local.gke_endpoint

  exec {
    api_version = local.gke_auth_plugin.api_version
    command     = local.gke_auth_plugin.command
  }
}

provider "helm" {
  kubernetes = {
    host = local.gke_endpoint
    exec = local.gke_auth_plugin
  }
}

resource "kubernetes_namespace_v1" "metaflow" {
  count = local.gke

  metadata {
    name = var.metaflow_namespace
    labels = {
      "app.kubernetes.io/part-of" = "operational-ml"
    }
  }
}

resource "kubernetes_service_account_v1" "metaflow_steps" {
  count = local.gke

  metadata {
    name      = var.metaflow_kubernetes_service_account
    namespace = kubernetes_namespace_v1.metaflow[0].metadata[0].name
    annotations = {
      # GKE's metadata server hands pods of this account tokens of the Google account.
      "iam.gke.io/gcp-service-account" = google_service_account.metaflow_steps[0].email
    }
  }
}

# The controller watches only the flows' namespace; the chart gives the steps' account the Role
# Argo's executor needs there (workflow.rbac), and nothing cluster-wide. The UI and API server
# accept the caller's own Kubernetes credentials only (authModes client): reach it with
# kubectl -n argo port-forward svc/argo-workflows-server 2746.
resource "helm_release" "argo_workflows" {
  count            = local.gke
  name             = "argo-workflows"
  repository       = "https://argoproj.github.io/argo-helm"
  chart            = "argo-workflows"
  version          = var.argo_workflows_chart_version
  namespace        = var.argo_namespace
  create_namespace = true
  atomic           = true

  values = [yamlencode({
    controller = {
      workflowNamespaces = [var.metaflow_namespace]
    }
    workflow = {
      serviceAccount = {
        create = false
        name   = var.metaflow_kubernetes_service_account
      }
      rbac = {
        create = true
      }
    }
    server = {
      authModes = ["client"]
    }
  })]

  depends_on = [kubernetes_service_account_v1.metaflow_steps, google_compute_router_nat.gke]
}

# Argo Events: how the training flow starts when the tuning flow finishes (@trigger_on_finish).
# Its controller manages the flows' namespace only.
resource "helm_release" "argo_events" {
  count            = local.gke
  name             = "argo-events"
  repository       = "https://argoproj.github.io/argo-helm"
  chart            = "argo-events"
  version          = var.argo_events_chart_version
  namespace        = var.argo_events_namespace
  create_namespace = true
  atomic           = true

  values = [yamlencode({
    controller = {
      rbac = {
        namespaced       = true
        managedNamespace = var.metaflow_namespace
      }
    }
  })]

  depends_on = [kubernetes_namespace_v1.metaflow, google_compute_router_nat.gke]
}

# The event bus, the webhook Metaflow posts finished runs to and the sensors' account, in the
# flows' namespace (charts/metaflow-events; names as in infra/metaflow/config_gke.json).
resource "helm_release" "metaflow_events" {
  count     = local.gke
  name      = "metaflow-events"
  chart     = "${path.module}/charts/metaflow-events"
  namespace = kubernetes_namespace_v1.metaflow[0].metadata[0].name
  atomic    = true

  depends_on = [helm_release.argo_events]
}
