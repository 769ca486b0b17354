{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "dagsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, plus the chart name unless it already has it. */}}
{{- define "dagsync.fullname" -}}
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

{{- define "dagsync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dagsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dagsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dagsync.labels" -}}
helm.sh/chart: {{ include "dagsync.chart" . }}
{{ include "dagsync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "dagsync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dagsync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dagsync.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "dagsync.claimName" -}}
{{- default (include "dagsync.fullname" .) .Values.persistence.existingClaim }}
{{- end }}

{{/*
The period in seconds, for alert thresholds. Accepts what dagsync accepts and the schema allows:
90, 90s, 5m, 1h, 500ms.
*/}}
{{- define "dagsync.periodSeconds" -}}
{{- $p := toString .Values.period }}
{{- if hasSuffix "ms" $p }}
{{- divf (trimSuffix "ms" $p | float64) 1000 }}
{{- else if hasSuffix "s" $p }}
{{- trimSuffix "s" $p | float64 }}
{{- else if hasSuffix "m" $p }}
{{- mulf (trimSuffix "m" $p | float64) 60 }}
{{- else if hasSuffix "h" $p }}
{{- mulf (trimSuffix "h" $p | float64) 3600 }}
{{- else }}
{{- $p | float64 }}
{{- end }}
{{- end }}

{{/* Label selector for the alert expressions. */}}
{{- define "dagsync.metricSelector" -}}
{{- default (printf "job=%q,namespace=%q" (include "dagsync.fullname" .) .Release.Namespace) .Values.prometheusRule.metricSelector }}
{{- end }}

{{/* Secret files, all under /etc/dagsync through one projected volume (re-read on rotation). */}}
{{- define "dagsync.hasSecretFiles" -}}
{{- $g := .Values.git }}
{{- $a := .Values.azure }}
{{- $serveToken := and .Values.serveRevisions.enabled .Values.serveRevisions.existingSecret }}
{{- if or .Values.triggerSecret $serveToken (and (eq .Values.source "git") (or $g.sshKeySecret $g.knownHostsSecret $g.credentialsSecret)) (and (eq .Values.source "azure") (or $a.accountKeySecret $a.sasTokenSecret)) (include "dagsync.hasCloudSecretFiles" .) -}}
true
{{- end }}
{{- end }}

{{- define "dagsync.secretFileSources" -}}
{{- $g := .Values.git }}
{{- $a := .Values.azure }}
{{- if eq .Values.source "git" }}
{{- with $g.sshKeySecret }}
- secret:
    name: {{ . }}
    items:
      - key: {{ $g.secretKeys.sshKey }}
        path: git/ssh
{{- end }}
{{- with $g.knownHostsSecret }}
- secret:
    name: {{ . }}
    items:
      - key: {{ $g.secretKeys.knownHosts }}
        path: git/known_hosts
{{- end }}
{{- with $g.credentialsSecret }}
- secret:
    name: {{ . }}
    items:
      - key: {{ $g.secretKeys.password }}
        path: git/password
{{- end }}
{{- end }}
{{- if eq .Values.source "azure" }}
{{- with $a.accountKeySecret }}
- secret:
    name: {{ . }}
    items:
      - key: {{ $a.secretKeys.accountKey }}
        path: azure/account-key
{{- end }}
{{- with $a.sasTokenSecret }}
- secret:
    name: {{ . }}
    items:
      - key: {{ $a.secretKeys.sasToken }}
        path: azure/sas-token
{{- end }}
{{- end }}
{{- include "dagsync.cloudSecretFileSources" . }}
{{- with .Values.triggerSecret }}
- secret:
    name: {{ . }}
    items:
      - key: token
        path: trigger/token
{{- end }}
{{- if .Values.serveRevisions.enabled }}
{{- with .Values.serveRevisions.existingSecret }}
- secret:
    name: {{ . }}
    items:
      - key: {{ $.Values.serveRevisions.secretKey }}
        path: serve/token
{{- end }}
{{- end }}
{{- end }}

{{/* A plain `name: value` env entry, skipped when the value is empty. */}}
{{- define "dagsync.envVar" -}}
{{- if not (kindIs "invalid" .value) }}
{{- if ne (toString .value) "" }}
- name: {{ .name }}
  value: {{ toString .value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dagsync.secretEnvVar" }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{/* Source-specific environment. Fails early on combinations dagsync would reject at start. */}}
{{- define "dagsync.sourceEnv" -}}
{{- $v := .Values }}
{{- if eq $v.source "git" }}
{{- $g := $v.git }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_REPO" "value" $g.repo) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_REF" "value" $g.ref) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_DEPTH" "value" $g.depth) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_SUBMODULES" "value" $g.submodules) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_SUBPATH" "value" $g.subpath) }}
{{- if $g.sshKeySecret }}
{{- if and $g.strictHostKeyChecking (not $g.knownHostsSecret) }}
{{- fail "git.sshKeySecret needs git.knownHostsSecret (or git.strictHostKeyChecking=false)" }}
{{- end }}
- name: DAGSYNC_SSH_KEY_FILE
  value: /etc/dagsync/git/ssh
{{- end }}
{{- if $g.knownHostsSecret }}
- name: DAGSYNC_SSH_KNOWN_HOSTS_FILE
  value: /etc/dagsync/git/known_hosts
{{- else if not $g.strictHostKeyChecking }}
- name: DAGSYNC_SSH_KNOWN_HOSTS
  value: "false"
{{- end }}
{{- if $g.credentialsSecret }}
{{- include "dagsync.secretEnvVar" (dict "name" "DAGSYNC_USERNAME" "secret" $g.credentialsSecret "key" $g.secretKeys.username) }}
- name: DAGSYNC_PASSWORD_FILE
  value: /etc/dagsync/git/password
{{- end }}
{{- else if eq $v.source "oss" }}
{{- $o := $v.oss }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_OSS_ENDPOINT" "value" $o.endpoint) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_OSS_BUCKET" "value" $o.bucket) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_OSS_PREFIX" "value" $o.prefix) }}
{{- with $o.credentialsSecret }}
{{- include "dagsync.secretEnvVar" (dict "name" "OSS_ACCESS_KEY_ID" "secret" . "key" "OSS_ACCESS_KEY_ID") }}
{{- include "dagsync.secretEnvVar" (dict "name" "OSS_ACCESS_KEY_SECRET" "secret" . "key" "OSS_ACCESS_KEY_SECRET") }}
{{- include "dagsync.secretEnvVar" (dict "name" "OSS_SESSION_TOKEN" "secret" . "key" "OSS_SESSION_TOKEN" "optional" true) }}
{{- end }}
{{- else if eq $v.source "azure" }}
{{- $a := $v.azure }}
{{- $n := 0 }}
{{- range (list $a.connectionStringSecret $a.accountKeySecret $a.sasTokenSecret) }}
{{- if . }}{{ $n = add1 $n }}{{ end }}
{{- end }}
{{- if gt $n 1 }}
{{- fail "azure: set only one of connectionStringSecret, accountKeySecret, sasTokenSecret" }}
{{- end }}
{{- if and (or $a.accountKeySecret $a.sasTokenSecret) (not $a.accountUrl) }}
{{- fail "azure.accountUrl is required with azure.accountKeySecret or azure.sasTokenSecret" }}
{{- end }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_AZURE_SHARE" "value" $a.share) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_AZURE_PATH" "value" $a.path) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_AZURE_ACCOUNT_URL" "value" $a.accountUrl) }}
{{- with $a.connectionStringSecret }}
{{- include "dagsync.secretEnvVar" (dict "name" "AZURE_STORAGE_CONNECTION_STRING" "secret" . "key" $a.secretKeys.connectionString) }}
{{- end }}
{{- if $a.accountKeySecret }}
- name: DAGSYNC_AZURE_ACCOUNT_KEY_FILE
  value: /etc/dagsync/azure/account-key
{{- end }}
{{- if $a.sasTokenSecret }}
- name: DAGSYNC_AZURE_SAS_TOKEN_FILE
  value: /etc/dagsync/azure/sas-token
{{- end }}
{{- else if has $v.source (list "s3" "gcs" "azureblob") }}
{{- include "dagsync.cloudEnv" . }}
{{- else if eq $v.source "local" }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_LOCAL_PATH" "value" $v.local.path) }}
{{- end }}
{{- end }}

{{/* The container's environment: common options, then the source's. */}}
{{- define "dagsync.env" -}}
{{- $v := .Values }}
- name: DAGSYNC_SOURCE
  value: {{ $v.source | quote }}
- name: DAGSYNC_ROOT
  value: /git
- name: DAGSYNC_HTTP_BIND
  value: "0.0.0.0:9797"
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_LINK" "value" $v.link) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_PERIOD" "value" $v.period) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_SYNC_TIMEOUT" "value" $v.syncTimeout) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_KEEP_REVISIONS" "value" $v.keepRevisions) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_CHECK" "value" $v.check) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_LOG_FORMAT" "value" $v.logFormat) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_LOG_LEVEL" "value" $v.logLevel) }}
{{- if $v.triggerSecret }}
- name: DAGSYNC_TRIGGER_SECRET_FILE
  value: /etc/dagsync/trigger/token
{{- end }}
{{- if $v.serveRevisions.enabled }}
- name: DAGSYNC_SERVE_REVISIONS
  value: "true"
{{- if $v.serveRevisions.existingSecret }}
- name: DAGSYNC_SERVE_TOKEN_FILE
  value: /etc/dagsync/serve/token
{{- end }}
{{- end }}
{{- include "dagsync.sourceEnv" . }}
{{- end }}
