{{/* The s3, gcs and azureblob sources: environment, secret files and the ServiceAccount's
workload-identity annotations (IRSA, GKE workload identity, Azure workload identity). */}}

{{- define "dagsync.serviceAccountAnnotations" -}}
{{- $out := deepCopy (default dict .Values.serviceAccount.annotations) }}
{{- $v := .Values }}
{{- if and (eq $v.source "s3") $v.s3.roleArn }}
{{- $_ := set $out "eks.amazonaws.com/role-arn" $v.s3.roleArn }}
{{- end }}
{{- if and (eq $v.source "gcs") $v.gcs.serviceAccount }}
{{- $_ := set $out "iam.gke.io/gcp-service-account" $v.gcs.serviceAccount }}
{{- end }}
{{- if and (eq $v.source "azureblob") $v.azureblob.clientId }}
{{- $_ := set $out "azure.workload.identity/client-id" $v.azureblob.clientId }}
{{- end }}
{{- if $out }}
{{- toYaml $out }}
{{- end }}
{{- end }}

{{- define "dagsync.hasCloudSecretFiles" -}}
{{- $v := .Values }}
{{- if or (and (eq $v.source "gcs") $v.gcs.keyFileSecret) (and (eq $v.source "azureblob") (or $v.azureblob.accountKeySecret $v.azureblob.sasTokenSecret)) -}}
true
{{- end }}
{{- end }}

{{- define "dagsync.cloudSecretFileSources" -}}
{{- $v := .Values }}
{{- if and (eq $v.source "gcs") $v.gcs.keyFileSecret }}
- secret:
    name: {{ $v.gcs.keyFileSecret }}
    items:
      - key: {{ $v.gcs.secretKeys.keyFile }}
        path: gcs/key.json
{{- end }}
{{- if eq $v.source "azureblob" }}
{{- $b := $v.azureblob }}
{{- with $b.accountKeySecret }}
- secret:
    name: {{ . }}
    items:
      - key: {{ $b.secretKeys.accountKey }}
        path: azureblob/account-key
{{- end }}
{{- with $b.sasTokenSecret }}
- secret:
    name: {{ . }}
    items:
      - key: {{ $b.secretKeys.sasToken }}
        path: azureblob/sas-token
{{- end }}
{{- end }}
{{- end }}

{{/* Workload identity needs the chart's own ServiceAccount to carry the annotation. */}}
{{- define "dagsync.requireServiceAccount" -}}
{{- if not .root.Values.serviceAccount.create }}
{{- fail (printf "%s needs serviceAccount.create=true (or leave it empty and annotate the ServiceAccount named by serviceAccount.name yourself)" .what) }}
{{- end }}
{{- end }}

{{- define "dagsync.cloudEnv" -}}
{{- $v := .Values }}
{{- if eq $v.source "s3" }}
{{- $s := $v.s3 }}
{{- if and $s.roleArn $s.credentialsSecret }}
{{- fail "s3: set either roleArn (IRSA) or credentialsSecret, not both" }}
{{- end }}
{{- if $s.roleArn }}{{ include "dagsync.requireServiceAccount" (dict "root" . "what" "s3.roleArn") }}{{ end }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_S3_BUCKET" "value" $s.bucket) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_S3_PREFIX" "value" $s.prefix) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_S3_REGION" "value" $s.region) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_S3_ENDPOINT_URL" "value" $s.endpointUrl) }}
{{- with $s.credentialsSecret }}
{{- include "dagsync.secretEnvVar" (dict "name" "AWS_ACCESS_KEY_ID" "secret" . "key" "AWS_ACCESS_KEY_ID") }}
{{- include "dagsync.secretEnvVar" (dict "name" "AWS_SECRET_ACCESS_KEY" "secret" . "key" "AWS_SECRET_ACCESS_KEY") }}
{{- include "dagsync.secretEnvVar" (dict "name" "AWS_SESSION_TOKEN" "secret" . "key" "AWS_SESSION_TOKEN" "optional" true) }}
{{- end }}
{{- else if eq $v.source "gcs" }}
{{- $g := $v.gcs }}
{{- if and $g.serviceAccount $g.keyFileSecret }}
{{- fail "gcs: set either serviceAccount (workload identity) or keyFileSecret, not both" }}
{{- end }}
{{- if $g.serviceAccount }}{{ include "dagsync.requireServiceAccount" (dict "root" . "what" "gcs.serviceAccount") }}{{ end }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_GCS_BUCKET" "value" $g.bucket) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_GCS_PREFIX" "value" $g.prefix) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_GCS_PROJECT" "value" $g.project) }}
{{- if $g.keyFileSecret }}
- name: GOOGLE_APPLICATION_CREDENTIALS
  value: /etc/dagsync/gcs/key.json
{{- end }}
{{- else if eq $v.source "azureblob" }}
{{- $b := $v.azureblob }}
{{- $n := 0 }}
{{- range (list $b.connectionStringSecret $b.accountKeySecret $b.sasTokenSecret) }}
{{- if . }}{{ $n = add1 $n }}{{ end }}
{{- end }}
{{- if gt $n 1 }}
{{- fail "azureblob: set only one of connectionStringSecret, accountKeySecret, sasTokenSecret" }}
{{- end }}
{{- if and $b.connectionStringSecret $b.accountUrl }}
{{- fail "azureblob: accountUrl and connectionStringSecret: give only one" }}
{{- end }}
{{- if and (not $b.connectionStringSecret) (not $b.accountUrl) }}
{{- fail "azureblob.accountUrl is required unless azureblob.connectionStringSecret is set" }}
{{- end }}
{{- if $b.clientId }}{{ include "dagsync.requireServiceAccount" (dict "root" . "what" "azureblob.clientId") }}{{ end }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_AZUREBLOB_CONTAINER" "value" $b.container) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_AZUREBLOB_PREFIX" "value" $b.prefix) }}
{{- include "dagsync.envVar" (dict "name" "DAGSYNC_AZUREBLOB_ACCOUNT_URL" "value" $b.accountUrl) }}
{{- with $b.connectionStringSecret }}
{{- include "dagsync.secretEnvVar" (dict "name" "AZURE_STORAGE_CONNECTION_STRING" "secret" . "key" $b.secretKeys.connectionString) }}
{{- end }}
{{- if $b.accountKeySecret }}
- name: DAGSYNC_AZURE_ACCOUNT_KEY_FILE
  value: /etc/dagsync/azureblob/account-key
{{- end }}
{{- if $b.sasTokenSecret }}
- name: DAGSYNC_AZURE_SAS_TOKEN_FILE
  value: /etc/dagsync/azureblob/sas-token
{{- end }}
{{- end }}
{{- end }}
