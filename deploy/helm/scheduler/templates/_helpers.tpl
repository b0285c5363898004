{{/*
The chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "scheduler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The resource name prefix: <release>-<chart>, or the release name when it already contains the chart name.
*/}}
{{- define "scheduler.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "scheduler.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "scheduler.labels" -}}
helm.sh/chart: {{ include "scheduler.chart" . }}
{{ include "scheduler.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: scheduler
{{- end }}

{{/*
Selector labels; each component adds app.kubernetes.io/component (api, worker, migrations).
*/}}
{{- define "scheduler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scheduler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount of the API and worker pods.
*/}}
{{- define "scheduler.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "scheduler.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "scheduler.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The Secret holding POSTGRES_URL, NATS_URL and SECRETS_KEY: secret.existingSecret or the chart's own.
*/}}
{{- define "scheduler.secretName" -}}
{{- if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else }}
{{- include "scheduler.fullname" . }}
{{- end }}
{{- end }}

{{/*
The env entry taking POSTGRES_URL from a component's postgresUrlSecretRef (call it only when the ref names a
Secret); explicit env entries take precedence over the shared Secret loaded with envFrom.
Call with the ref: include "scheduler.postgresUrlEnv" .Values.api.postgresUrlSecretRef
*/}}
{{- define "scheduler.postgresUrlEnv" -}}
- name: POSTGRES_URL
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key | default "POSTGRES_URL" }}
{{- end }}
