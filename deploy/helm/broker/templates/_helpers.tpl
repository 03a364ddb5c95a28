{{/* Chart name, truncated to the 63 characters Kubernetes allows. */}}
{{- define "broker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "broker.fullname" -}}
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

{{- define "broker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "broker.labels" -}}
helm.sh/chart: {{ include "broker.chart" . }}
{{ include "broker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "broker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "broker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "broker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret and key holding the Redis URL. */}}
{{- define "broker.redisSecretName" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecret }}{{ else }}{{ include "broker.fullname" . }}-redis{{ end }}
{{- end }}
{{- define "broker.redisSecretKey" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}redis-url{{ end }}
{{- end }}

{{/* Seconds a pod may take to stop: drain, plus one SQS long poll, plus margin. */}}
{{- define "broker.terminationGracePeriod" -}}
{{- $drain := int (default 25 .Values.broker.drain_timeout_seconds) }}
{{- add $drain 20 10 }}
{{- end }}

{{/* The config file (DESIGN §3) rendered from values. */}}
{{- define "broker.config" -}}
{{- $settings := dict "region" .Values.aws.region "account_id" (toString .Values.aws.accountId) "data_dir" "/data" "api" (dict "host" "0.0.0.0" "port" (int .Values.service.port)) "redis_url" "redis://set-by-BROKER_REDIS_URL:6379/0" }}
{{- if .Values.aws.endpointUrl }}{{ $_ := set $settings "aws_endpoint_url" .Values.aws.endpointUrl }}{{ end }}
{{- $broker := merge (deepCopy .Values.broker) $settings }}
{{- $config := dict "broker" $broker "functions" .Values.functions "event_source_mappings" .Values.eventSourceMappings }}
{{- toYaml $config }}
{{- end }}
