{{/* The chart's name. */}}
{{- define "hitl-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name if it contains the chart's name. */}}
{{- define "hitl-gateway.fullname" -}}
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

{{- define "hitl-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hitl-gateway.labels" -}}
helm.sh/chart: {{ include "hitl-gateway.chart" . }}
{{ include "hitl-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "hitl-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hitl-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hitl-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hitl-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hitl-gateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
A value as an environment string. Helm reads numbers as floats; whole numbers render
without an exponent (52428800, not 5.24288e+07).
*/}}
{{- define "hitl-gateway.str" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- int64 . }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{/* Paths inside the container. */}}
{{- define "hitl-gateway.configDir" -}}/etc/hitl-gateway/config{{- end }}
{{- define "hitl-gateway.reviewersDir" -}}/etc/hitl-gateway/reviewers{{- end }}
{{- define "hitl-gateway.kafkaTlsDir" -}}/etc/hitl-gateway/kafka-tls{{- end }}
{{- define "hitl-gateway.auditKeysDir" -}}/etc/hitl-gateway/audit-keys{{- end }}
{{- define "hitl-gateway.decisionKeysDir" -}}/etc/hitl-gateway/decision-keys{{- end }}
{{- define "hitl-gateway.oidcDir" -}}/etc/hitl-gateway/oidc{{- end }}

{{/* The Secret the chart makes for credentials given as values. */}}
{{- define "hitl-gateway.credentialsSecret" -}}
{{- printf "%s-credentials" (include "hitl-gateway.fullname" .) }}
{{- end }}

{{- define "hitl-gateway.kafkaUsesSasl" -}}
{{- if hasPrefix "SASL" .Values.kafka.securityProtocol }}true{{- end }}
{{- end }}

{{- define "hitl-gateway.kafkaUsesTls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{- end }}
{{- end }}

{{/* SASL with a username and password (PLAIN, SCRAM): the credentials Secret is used. */}}
{{- define "hitl-gateway.kafkaSaslPassword" -}}
{{- if and (include "hitl-gateway.kafkaUsesSasl" .) (has .Values.kafka.saslMechanism (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512")) }}true{{- end }}
{{- end }}

{{- define "hitl-gateway.kafkaSaslSecret" -}}
{{- default (include "hitl-gateway.credentialsSecret" .) .Values.kafka.sasl.existingSecret }}
{{- end }}

{{- define "hitl-gateway.redisPasswordSecret" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecret }}
{{- else if .Values.redis.password }}
{{- include "hitl-gateway.credentialsSecret" . }}
{{- end }}
{{- end }}

{{- define "hitl-gateway.notifySecret" -}}
{{- if .Values.notify.webhook.existingSecret }}
{{- .Values.notify.webhook.existingSecret }}
{{- else if .Values.notify.webhook.url }}
{{- include "hitl-gateway.credentialsSecret" . }}
{{- end }}
{{- end }}

{{/* The credentials Secret has content: some credential is given as a value. */}}
{{- define "hitl-gateway.credentialsNeeded" -}}
{{- $sasl := and (include "hitl-gateway.kafkaSaslPassword" .) (not .Values.kafka.sasl.existingSecret) }}
{{- $redis := and .Values.redis.password (not .Values.redis.existingSecret) }}
{{- $notify := and .Values.notify.webhook.url (not .Values.notify.webhook.existingSecret) }}
{{- if or $sasl $redis $notify }}true{{- end }}
{{- end }}

{{- define "hitl-gateway.reviewersSecret" -}}
{{- if .Values.reviewers.existingSecret }}
{{- .Values.reviewers.existingSecret }}
{{- else if .Values.reviewers.reviewers }}
{{- printf "%s-reviewers" (include "hitl-gateway.fullname" .) }}
{{- end }}
{{- end }}

{{/* KEDA's SASL mode for the gateway's mechanism. */}}
{{- define "hitl-gateway.kedaSasl" -}}
{{- get (dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512") .Values.kafka.saslMechanism }}
{{- end }}

{{- define "hitl-gateway.triggerAuthName" -}}
{{- if .Values.keda.triggerAuthentication.existingName }}
{{- .Values.keda.triggerAuthentication.existingName }}
{{- else if or (include "hitl-gateway.kafkaUsesSasl" .) (and (include "hitl-gateway.kafkaUsesTls" .) .Values.kafka.tls.existingSecret) }}
{{- printf "%s-kafka" (include "hitl-gateway.fullname" .) }}
{{- end }}
{{- end }}

{{/* The grace period: the drain budget plus a margin, or the value given (checked above it). */}}
{{- define "hitl-gateway.terminationGracePeriodSeconds" -}}
{{- $drain := float64 .Values.runtime.shutdownTimeoutSeconds }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (int64 (ceil $drain)) (int64 .Values.runtime.terminationGraceMarginSeconds) }}
{{- else }}
{{- int64 .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Settings that cannot work, refused at rendering with the reason. */}}
{{- define "hitl-gateway.validate" -}}
{{- if ne (empty .Values.audit.keys.existingSecret) (empty .Values.audit.activeKeyId) }}
{{- fail "audit.keys.existingSecret and audit.activeKeyId are set together (or neither)" }}
{{- end }}
{{- if ne (empty .Values.decisions.keys.existingSecret) (empty .Values.decisions.gatewayKeyId) }}
{{- fail "decisions.keys.existingSecret and decisions.gatewayKeyId are set together (or neither)" }}
{{- end }}
{{- if and .Values.oidc.issuer (or (not .Values.oidc.audience) (not .Values.oidc.groups)) }}
{{- fail "oidc.issuer needs oidc.audience and oidc.groups (group: {pools, domains, operator})" }}
{{- end }}
{{- if and (eq .Values.kafka.saslMechanism "OAUTHBEARER") (include "hitl-gateway.kafkaUsesSasl" .) (or (not .Values.kafka.oauth.tokenUrl) (not .Values.kafka.oauth.clientId) (not .Values.kafka.oauth.clientSecret.existingSecret)) }}
{{- fail "kafka.saslMechanism OAUTHBEARER needs kafka.oauth.tokenUrl, kafka.oauth.clientId and kafka.oauth.clientSecret.existingSecret" }}
{{- end }}
{{- $drain := float64 .Values.runtime.shutdownTimeoutSeconds }}
{{- if le $drain 0.0 }}
{{- fail "runtime.shutdownTimeoutSeconds must be above 0" }}
{{- end }}
{{- if not (kindIs "invalid" .Values.terminationGracePeriodSeconds) }}
{{- if le (float64 .Values.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be above runtime.shutdownTimeoutSeconds (%v), the gateway's drain budget: otherwise the kubelet kills it while it still finishes and commits its in-flight batches, and its partitions wait for the session timeout before another instance takes them. Leave terminationGracePeriodSeconds null to get the budget plus runtime.terminationGraceMarginSeconds." .Values.terminationGracePeriodSeconds .Values.runtime.shutdownTimeoutSeconds) }}
{{- end }}
{{- end }}
{{- if lt (float64 .Values.kafka.inputPartitions) 1.0 }}
{{- fail "kafka.inputPartitions must be at least 1" }}
{{- end }}
{{- if .Values.keda.enabled }}
{{- if lt (float64 .Values.keda.minReplicaCount) 1.0 }}
{{- fail (printf "keda.minReplicaCount (%v) must be at least 1: the review API, the reviewer workspace and SLA escalation run in the gateway, so it cannot scale to zero when the input topic is idle." .Values.keda.minReplicaCount) }}
{{- end }}
{{- if gt (float64 .Values.keda.maxReplicaCount) (float64 .Values.kafka.inputPartitions) }}
{{- fail (printf "keda.maxReplicaCount (%v) exceeds kafka.inputPartitions (%v): a consumer group gives each partition to one member only, so replicas past the partition count would sit idle. Lower keda.maxReplicaCount or add partitions to the input topic." .Values.keda.maxReplicaCount .Values.kafka.inputPartitions) }}
{{- end }}
{{- if gt (float64 .Values.keda.minReplicaCount) (float64 .Values.keda.maxReplicaCount) }}
{{- fail (printf "keda.minReplicaCount (%v) exceeds keda.maxReplicaCount (%v)" .Values.keda.minReplicaCount .Values.keda.maxReplicaCount) }}
{{- end }}
{{- if and (include "hitl-gateway.kafkaUsesSasl" .) (not (include "hitl-gateway.kedaSasl" .)) (not .Values.keda.triggerAuthentication.existingName) }}
{{- fail (printf "kafka.saslMechanism %s: the chart's KEDA TriggerAuthentication covers PLAIN and SCRAM only; set keda.triggerAuthentication.existingName to your own, or keda.enabled=false" .Values.kafka.saslMechanism) }}
{{- end }}
{{- end }}
{{- if not (has .Values.kafka.securityProtocol (list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) }}
{{- fail (printf "kafka.securityProtocol %q: one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and (include "hitl-gateway.kafkaSaslPassword" .) (not .Values.kafka.sasl.existingSecret) (or (not .Values.kafka.sasl.username) (not .Values.kafka.sasl.password)) }}
{{- fail (printf "kafka.securityProtocol %s with kafka.saslMechanism %s needs kafka.sasl.existingSecret, or kafka.sasl.username and kafka.sasl.password" .Values.kafka.securityProtocol .Values.kafka.saslMechanism) }}
{{- end }}
{{- if and (or .Values.kafka.tls.certKey .Values.kafka.tls.keyKey .Values.kafka.tls.keyPasswordKey) (not .Values.kafka.tls.existingSecret) }}
{{- fail "kafka.tls.certKey, keyKey and keyPasswordKey name keys of kafka.tls.existingSecret, which is not set" }}
{{- end }}
{{- if ne (empty .Values.kafka.tls.certKey) (empty .Values.kafka.tls.keyKey) }}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together (mutual TLS)" }}
{{- end }}
{{- range $name, $_ := .Values.env }}
{{- if not (hasPrefix "HITL_" $name) }}
{{- fail (printf "env.%s: only HITL_* settings belong in env; use extraEnv for other variables" $name) }}
{{- end }}
{{- end }}
{{- range $path, $_ := .Values.config.files }}
{{- if not (regexMatch "^(policies/([-._A-Za-z0-9]+/)*[-._A-Za-z0-9]+|pools\\.yaml|routing\\.yaml)$" $path) }}
{{- fail (printf "config.files: %q is not policies/<file>, pools.yaml or routing.yaml" $path) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The config directory's files, path -> content: the chart's defaults (files/config/) overlaid
with config.files.
*/}}
{{- define "hitl-gateway.configFiles" -}}
{{- $files := dict }}
{{- if .Values.config.defaults }}
{{- range $path, $_ := .Files.Glob "files/config/**" }}
{{- $_ := set $files (trimPrefix "files/config/" $path) ($.Files.Get $path) }}
{{- end }}
{{- end }}
{{- range $path, $content := .Values.config.files }}
{{- $_ := set $files $path $content }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{/* A ConfigMap key for a path under the config directory (keys cannot hold "/"). */}}
{{- define "hitl-gateway.configKey" -}}
{{- replace "/" "__" . }}
{{- end }}
