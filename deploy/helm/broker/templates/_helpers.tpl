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

{{/* The broker's own pods (the bundled Redis has component: redis): what the Deployment, Service,
PDB, ServiceMonitor and NetworkPolicy select. */}}
{{- define "broker.brokerSelectorLabels" -}}
{{ include "broker.selectorLabels" . }}
app.kubernetes.io/component: broker
{{- end }}

{{- define "broker.apiSecretName" -}}
{{- .Values.api.existingSecret | default (printf "%s-api" (include "broker.fullname" .)) }}
{{- end }}

{{- define "broker.redisPasswordSecretName" -}}
{{- .Values.redis.bundled.auth.existingSecret | default (printf "%s-redis-password" (include "broker.fullname" .)) }}
{{- end }}

{{- define "broker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "broker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Which Redis the broker uses, said one way: an external one (redis.url or redis.existingSecret)
turns the bundled one off; without either, the bundled one (unless it is switched off too). */}}
{{- define "broker.redisMode" -}}
{{- if or .Values.redis.existingSecret .Values.redis.url }}external
{{- else if .Values.redis.bundled.enabled }}bundled
{{- else }}{{ fail "no Redis: keep redis.bundled.enabled=true (the default), or set redis.url or redis.existingSecret" }}
{{- end }}
{{- end }}

{{/* The TCP port of a URL: its own, else its scheme's. */}}
{{- define "broker.urlPort" -}}
{{- $u := urlParse . }}
{{- $explicit := trimPrefix (printf "%s:" $u.hostname) $u.host }}
{{- if and $explicit (ne $explicit $u.host) }}{{ $explicit }}{{ else if eq $u.scheme "https" }}443{{ else }}80{{ end }}
{{- end }}

{{/* The ports of the targets the values name (function Urls, an AWS-compatible endpoint), one per
line, besides AWS's 443. */}}
{{- define "broker.targetPorts" -}}
{{- $ports := dict "443" true }}
{{- range $name, $fn := .Values.functions }}
{{- with (($fn | default dict).Target | default dict).Url }}{{ $_ := set $ports (include "broker.urlPort" .) true }}{{ end }}
{{- end }}
{{- with .Values.aws.endpointUrl }}{{ $_ := set $ports (include "broker.urlPort" .) true }}{{ end }}
{{- with (.Values.broker.tracing | default dict).endpoint }}{{ $_ := set $ports (include "broker.urlPort" .) true }}{{ end }}
{{- keys $ports | sortAlpha | join "\n" }}
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

{{/* The config file (README, "Configuration reference") rendered from values. */}}
{{- define "broker.config" -}}
{{- $api := dict "host" "0.0.0.0" "port" (int .Values.service.port) }}
{{- if .Values.api.allowUnauthenticated }}
{{- $_ := set $api "auth" "none" }}{{ $_ := set $api "allow_unauthenticated_network" true }}
{{- else }}
{{- $credentials := list }}
{{- range .Values.api.credentials }}
{{- $credentials = append $credentials (dict "AccessKeyId" .accessKeyId "SecretAccessKeyFile" (printf "/var/run/secrets/broker/api/%s" .accessKeyId) "Actions" (.actions | default (list "lambda:*")) "Resources" (.resources | default (list "*"))) }}
{{- end }}
{{- $_ := set $api "auth" "sigv4" }}{{ $_ := set $api "credentials" $credentials }}
{{- end }}
{{- $account := toString .Values.aws.accountId }}
{{- $_ := include "broker.redisMode" . }}
{{- $settings := dict "region" .Values.aws.region "data_dir" "/data" "api" $api "redis_url" "redis://set-by-BROKER_REDIS_URL:6379/0" }}
{{- /* no account id: the broker asks STS GetCallerIdentity at start */}}
{{- if and $account (not (regexMatch "^[0-9]{12}$" $account)) }}
{{- fail "aws.accountId must be your 12-digit AWS account id, quoted (--set-string aws.accountId=123456789012), or empty to ask STS" }}
{{- end }}
{{- if $account }}{{ $_ := set $settings "account_id" $account }}{{ end }}
{{- if .Values.aws.endpointUrl }}{{ $_ := set $settings "aws_endpoint_url" .Values.aws.endpointUrl }}{{ end }}
{{- $broker := merge (deepCopy .Values.broker) $settings }}
{{- $config := dict "broker" $broker "functions" .Values.functions "event_source_mappings" .Values.eventSourceMappings }}
{{- toYaml $config }}
{{- end }}
