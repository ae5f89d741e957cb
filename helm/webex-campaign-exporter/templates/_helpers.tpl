{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "wce.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; the release name alone when it already contains the chart name. */}}
{{- define "wce.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "wce.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{- define "wce.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wce.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wce.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wce.labels" -}}
helm.sh/chart: {{ include "wce.chart" . }}
{{ include "wce.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: webex-campaign-exporter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "wce.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wce.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "wce.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the API key: the user's, or the one this chart creates. */}}
{{- define "wce.apiKeySecretName" -}}
{{- default (printf "%s-api-key" (include "wce.fullname" .)) .Values.existingSecret }}
{{- end }}

{{- define "wce.apiKeySecretKey" -}}
{{- if .Values.existingSecret }}{{ .Values.existingSecretKey }}{{ else }}api-key{{ end }}
{{- end }}

{{- define "wce.webConfigSecretName" -}}
{{- default (printf "%s-web-config" (include "wce.fullname" .)) .Values.webConfig.existingSecret }}
{{- end }}

{{- define "wce.scheme" -}}
{{- if and .Values.webConfig.enabled .Values.webConfig.tls }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/*
"true" when the web config makes every client present a certificate: the kubelet cannot, so
the probes and the helm test fall back to TCP checks. Set by webConfig.clientCertRequired, or
read from webConfig.config's client_auth_type.
*/}}
{{- define "wce.clientCertRequired" -}}
{{- if .Values.webConfig.enabled }}
{{- $tls := get (.Values.webConfig.config | default dict) "tls_server_config" | default dict }}
{{- if or .Values.webConfig.clientCertRequired (has (get $tls "client_auth_type") (list "RequireAndVerifyClientCert" "RequireAnyClientCert")) }}true{{ end }}
{{- end }}
{{- end }}

{{/*
A probe: httpGet on the exporter's unauthenticated /-/healthy or /-/ready (basic auth never
applies to them; TLS does, hence the scheme), or tcpSocket when a client certificate is
required. Credentials never go into the pod spec.
*/}}
{{- define "wce.probe" -}}
{{- $probe := index . 1 }}
{{- with index . 0 }}
{{- if include "wce.clientCertRequired" . }}
tcpSocket:
  port: http
{{- else }}
httpGet:
  path: {{ $probe.path }}
  port: http
  scheme: {{ include "wce.scheme" . }}
{{- end }}
{{- end }}
{{- toYaml (omit $probe "enabled" "path") | nindent 0 }}
{{- end }}

{{/*
Fail early, with one clear line, on combinations the schema cannot express, instead of a
pod that exits at start.
*/}}
{{- define "wce.validate" -}}
{{- if .Values.tenants }}
{{- include "wce.validateTenants" . }}
{{- else if .Values.sharding.enabled }}
{{- fail "sharding.enabled needs tenants: shards split the tenants list between replicas (one tenant is never split)" }}
{{- else if .Values.tenantDefaults }}
{{- fail "tenantDefaults needs tenants: with one tenant set pollInterval, timeout, staleAfter or timezone" }}
{{- else if .Values.demo }}
{{- if or .Values.baseUrl .Values.apiKey .Values.existingSecret }}
{{- fail "demo: true ignores baseUrl, apiKey and existingSecret: set demo: false to monitor a real tenant" }}
{{- end }}
{{- else }}
{{- if not .Values.baseUrl }}
{{- fail "baseUrl is required unless demo: true (e.g. https://<tenant>.webexcampaign.io/campaignapi/resources/v3)" }}
{{- end }}
{{- if not (or .Values.apiKey .Values.existingSecret) }}
{{- fail "the API secret key is required: set existingSecret (preferred) or apiKey" }}
{{- end }}
{{- end }}
{{- if and .Values.webConfig.enabled (not (or .Values.webConfig.existingSecret .Values.webConfig.config)) }}
{{- fail "webConfig.enabled needs webConfig.existingSecret or webConfig.config" }}
{{- end }}
{{- end }}

{{/*
Several tenants: what the schema cannot say (unique names, single-tenant values left set, keys
the chart writes itself), one line each.
*/}}
{{- define "wce.validateTenants" -}}
{{- if .Values.demo }}
{{- fail "demo: true ignores tenants: set demo: false to poll the tenants" }}
{{- end }}
{{- range list "baseUrl" "tenant" "apiKey" "existingSecret" }}
{{- if get $.Values . }}
{{- fail (printf "tenants and %s are exclusive: %s is the single tenant's; set it per tenant in tenants[] and unset %s" . . .) }}
{{- end }}
{{- end }}
{{- $seen := dict }}
{{- range $index, $tenant := .Values.tenants }}
{{- $where := printf "tenants[%d]" $index }}
{{- if not $tenant.name }}
{{- fail (printf "%s.name is required: it becomes the tenant label" $where) }}
{{- end }}
{{- if hasKey $seen $tenant.name }}
{{- fail (printf "%s.name %q is a duplicate: tenant names must be unique" $where $tenant.name) }}
{{- end }}
{{- $_ := set $seen $tenant.name true }}
{{- if not $tenant.baseUrl }}
{{- fail (printf "%s (%s): baseUrl is required" $where $tenant.name) }}
{{- end }}
{{- if eq (empty $tenant.apiKey) (empty $tenant.existingSecret) }}
{{- fail (printf "%s (%s): set exactly one of existingSecret (preferred) and apiKey" $where $tenant.name) }}
{{- end }}
{{- range $key, $_ := $tenant.settings }}
{{- if has $key (include "wce.chartTenantKeys" $ | splitList " ") }}
{{- fail (printf "%s.settings.%s: not a setting here: the chart writes name, base URL and key file, and secrets are never inline; use %s.baseUrl, apiKey or existingSecret, or a *_file setting" $where $key $where) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $key, $_ := .Values.tenantDefaults }}
{{- if has $key (include "wce.chartTenantKeys" $ | splitList " ") }}
{{- fail (printf "tenantDefaults.%s: not a default: the chart writes name, base URL and key file per tenant, and secrets are never inline" $key) }}
{{- end }}
{{- end }}
{{- if and .Values.sharding.enabled (semverCompare "<1.28.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "sharding needs Kubernetes 1.28 or later: each replica reads its shard from the apps.kubernetes.io/pod-index label (this cluster: %s)" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end }}

{{/* Per-tenant keys of the config file the chart writes itself, or refuses (secrets inline). */}}
{{- define "wce.chartTenantKeys" -}}
name base_url api_key api_key_file api_key_env client_secret auth_key
{{- end }}

{{/* Names of the tenants whose key is given inline (tenants[].apiKey); empty if none. */}}
{{- define "wce.inlineKeyTenants" -}}
{{- range .Values.tenants }}{{ if .apiKey }}{{ .name }} {{ end }}{{ end }}
{{- end }}

{{- define "wce.tenantsConfigMapName" -}}{{ include "wce.fullname" . }}-tenants{{- end }}
{{- define "wce.tenantKeysSecretName" -}}{{ include "wce.fullname" . }}-tenant-keys{{- end }}

{{/*
The exporter's config file (--config.file): pollInterval, timeout, staleAfter and timezone as
defaults, tenantDefaults over them; per tenant its name, base_url, the key file the chart
mounts, and its settings verbatim.
*/}}
{{- define "wce.tenantsConfig" -}}
{{- $defaults := dict "poll_interval" (float64 .Values.pollInterval) "timeout" (float64 .Values.timeout) "timezone" .Values.timezone }}
{{- if .Values.staleAfter }}
{{- $_ := set $defaults "stale_after" (float64 .Values.staleAfter) }}
{{- end }}
{{- $tenants := list }}
{{- range .Values.tenants }}
{{- $tenant := dict "name" .name "base_url" .baseUrl "api_key_file" (printf "%s/%s" (include "wce.tenantKeysDir" $) .name) }}
{{- $tenants = append $tenants (merge $tenant (deepCopy (.settings | default dict))) }}
{{- end }}
{{- dict "defaults" (merge (deepCopy .Values.tenantDefaults) $defaults) "tenants" $tenants | toYaml }}
{{- end }}

{{/* Mount points inside the container. */}}
{{- define "wce.apiKeyDir" -}}/etc/webex-campaign-exporter/api-key{{- end }}
{{- define "wce.webConfigDir" -}}/etc/webex-campaign-exporter/web-config{{- end }}
{{- define "wce.configDir" -}}/etc/webex-campaign-exporter/config{{- end }}
{{- define "wce.tenantKeysDir" -}}/etc/webex-campaign-exporter/tenants{{- end }}

{{/* metadata of the workload: the Deployment, or the StatefulSet when sharding. */}}
{{- define "wce.workloadMetadata" -}}
name: {{ include "wce.fullname" . }}
namespace: {{ include "wce.namespace" . }}
labels:
  {{- include "wce.labels" . | nindent 2 }}
{{- with .Values.deploymentAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
