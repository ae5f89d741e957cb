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
{{- if .Values.demo }}
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

{{/* Mount points inside the container. */}}
{{- define "wce.apiKeyDir" -}}/etc/webex-campaign-exporter/api-key{{- end }}
{{- define "wce.webConfigDir" -}}/etc/webex-campaign-exporter/web-config{{- end }}
