{{/*
The pod template of the Deployment (one tenant, or all tenants in one pod) and of the
StatefulSet (sharding).
*/}}
{{- define "wce.podTemplate" -}}
metadata:
  labels:
    {{- include "wce.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- /* A changed web config restarts the pod; the API key deliberately does not (rotation). */}}
  {{- $annotations := deepCopy .Values.podAnnotations }}
  {{- if and .Values.webConfig.enabled (not .Values.webConfig.existingSecret) }}
  {{- $_ := set $annotations "checksum/web-config" (include (print $.Template.BasePath "/web-config-secret.yaml") . | sha256sum) }}
  {{- end }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "wce.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: exporter
      image: {{ include "wce.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - --web.listen-address=:{{ .Values.containerPort }}
        {{- /* With tenants, the tenant settings are in the config file (wce.tenantsConfig). */}}
        {{- if not .Values.tenants }}
        {{- if .Values.demo }}
        - --demo
        {{- else }}
        - {{ printf "--base-url=%s" .Values.baseUrl | quote }}
        {{- end }}
        {{- with .Values.tenant }}
        - {{ printf "--tenant=%s" . | quote }}
        {{- end }}
        - --poll-interval={{ .Values.pollInterval }}
        - --timeout={{ .Values.timeout }}
        {{- if .Values.staleAfter }}
        - --stale-after={{ .Values.staleAfter }}
        {{- end }}
        - {{ printf "--timezone=%s" .Values.timezone | quote }}
        {{- end }}
        - --log.level={{ .Values.logLevel }}
        - --log.format={{ .Values.logFormat }}
        {{- if .Values.webConfig.enabled }}
        - --web.config.file={{ include "wce.webConfigDir" . }}/{{ .Values.webConfig.key }}
        {{- end }}
        {{- range .Values.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      {{- with .Values.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if or (not .Values.demo) .Values.extraEnv }}
      env:
        {{- if .Values.tenants }}
        # The tenants and their key files; the exporter re-reads both when the kubelet updates them.
        - name: WEBEX_CAMPAIGN_CONFIG_FILE
          value: {{ include "wce.configDir" . }}/config.yaml
        {{- if .Values.sharding.enabled }}
        # The replica's ordinal, 0 to replicas-1: a label the StatefulSet controller sets (1.28+).
        - name: WEBEX_CAMPAIGN_SHARD
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
        - name: WEBEX_CAMPAIGN_TOTAL_SHARDS
          value: {{ .Values.sharding.replicas | quote }}
        {{- end }}
        {{- else if not .Values.demo }}
        # The key is read from a mounted file, re-read when the kubelet updates it.
        - name: WEBEX_CAMPAIGN_API_KEY_FILE
          value: {{ include "wce.apiKeyDir" . }}/api-key
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.containerPort }}
          protocol: TCP
      {{- if .Values.livenessProbe.enabled }}
      livenessProbe:
        {{- include "wce.probe" (list . .Values.livenessProbe) | trim | nindent 8 }}
      {{- end }}
      {{- if .Values.readinessProbe.enabled }}
      readinessProbe:
        {{- include "wce.probe" (list . .Values.readinessProbe) | trim | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      volumeMounts:
        # The root filesystem is read-only; Python and libraries may still want a /tmp.
        - name: tmp
          mountPath: /tmp
        {{- if .Values.tenants }}
        # Directory mounts, never subPath: subPath mounts miss ConfigMap and Secret updates.
        - name: tenants-config
          mountPath: {{ include "wce.configDir" . }}
          readOnly: true
        - name: tenant-keys
          mountPath: {{ include "wce.tenantKeysDir" . }}
          readOnly: true
        {{- else if not .Values.demo }}
        # A directory mount, never subPath: subPath mounts miss Secret updates (rotation).
        - name: api-key
          mountPath: {{ include "wce.apiKeyDir" . }}
          readOnly: true
        {{- end }}
        {{- if .Values.webConfig.enabled }}
        - name: web-config
          mountPath: {{ include "wce.webConfigDir" . }}
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 16Mi
    {{- if .Values.tenants }}
    - name: tenants-config
      configMap:
        name: {{ include "wce.tenantsConfigMapName" . }}
    # One file per tenant, named after it: the chart's Secret holds the inline keys (so adding
    # such a tenant changes no pod spec), each existingSecret adds its one key.
    - name: tenant-keys
      projected:
        defaultMode: 0440
        sources:
          {{- if include "wce.inlineKeyTenants" . }}
          - secret:
              name: {{ include "wce.tenantKeysSecretName" . }}
          {{- end }}
          {{- range .Values.tenants }}
          {{- if .existingSecret }}
          - secret:
              name: {{ .existingSecret }}
              items:
                - key: {{ .existingSecretKey | default "api-key" | quote }}
                  path: {{ .name | quote }}
          {{- end }}
          {{- end }}
    {{- else if not .Values.demo }}
    - name: api-key
      secret:
        secretName: {{ include "wce.apiKeySecretName" . }}
        defaultMode: 0440
        items:
          - key: {{ include "wce.apiKeySecretKey" . }}
            path: api-key
    {{- end }}
    {{- if .Values.webConfig.enabled }}
    - name: web-config
      secret:
        secretName: {{ include "wce.webConfigSecretName" . }}
        defaultMode: 0440
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
