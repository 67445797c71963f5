{{/* The container's environment: every HITL_* setting the chart gives the gateway. */}}
{{- define "hitl-gateway.env" -}}
{{- $redisSecret := include "hitl-gateway.redisPasswordSecret" . }}
{{- $notifySecret := include "hitl-gateway.notifySecret" . }}
{{- $tls := and (include "hitl-gateway.kafkaUsesTls" .) .Values.kafka.tls.existingSecret -}}
- name: HITL_KAFKA__BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: HITL_KAFKA__GROUP_ID
  value: {{ .Values.kafka.groupId | quote }}
- name: HITL_KAFKA__CLIENT_ID
  value: {{ .Values.kafka.clientId | quote }}
- name: HITL_KAFKA__TRANSACTIONAL_ID_PREFIX
  value: {{ .Values.kafka.transactionalIdPrefix | quote }}
- name: HITL_KAFKA__EXACTLY_ONCE
  value: {{ .Values.kafka.exactlyOnce | toString | quote }}
- name: HITL_KAFKA__SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if include "hitl-gateway.kafkaUsesSasl" . }}
- name: HITL_KAFKA__SASL_MECHANISM
  value: {{ .Values.kafka.saslMechanism | quote }}
{{- end }}
{{- if and (include "hitl-gateway.kafkaUsesSasl" .) (eq .Values.kafka.saslMechanism "OAUTHBEARER") }}
- name: HITL_KAFKA__OAUTH_TOKEN_URL
  value: {{ .Values.kafka.oauth.tokenUrl | quote }}
- name: HITL_KAFKA__OAUTH_CLIENT_ID
  value: {{ .Values.kafka.oauth.clientId | quote }}
{{- with .Values.kafka.oauth.scope }}
- name: HITL_KAFKA__OAUTH_SCOPE
  value: {{ . | quote }}
{{- end }}
- name: HITL_KAFKA__OAUTH_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.oauth.clientSecret.existingSecret }}
      key: {{ .Values.kafka.oauth.clientSecret.key }}
{{- end }}
{{- if include "hitl-gateway.kafkaSaslPassword" . }}
- name: HITL_KAFKA__SASL_PLAIN_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "hitl-gateway.kafkaSaslSecret" . }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: HITL_KAFKA__SASL_PLAIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "hitl-gateway.kafkaSaslSecret" . }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if $tls }}
- name: HITL_KAFKA__SSL_CAFILE
  value: {{ printf "%s/%s" (include "hitl-gateway.kafkaTlsDir" .) .Values.kafka.tls.caKey | quote }}
{{- if .Values.kafka.tls.certKey }}
- name: HITL_KAFKA__SSL_CERTFILE
  value: {{ printf "%s/%s" (include "hitl-gateway.kafkaTlsDir" .) .Values.kafka.tls.certKey | quote }}
- name: HITL_KAFKA__SSL_KEYFILE
  value: {{ printf "%s/%s" (include "hitl-gateway.kafkaTlsDir" .) .Values.kafka.tls.keyKey | quote }}
{{- end }}
{{- if .Values.kafka.tls.keyPasswordKey }}
- name: HITL_KAFKA__SSL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.tls.existingSecret }}
      key: {{ .Values.kafka.tls.keyPasswordKey }}
{{- end }}
{{- end }}
- name: HITL_TOPICS__OUTPUTS
  value: {{ .Values.topics.outputs | quote }}
- name: HITL_TOPICS__DELIVERED
  value: {{ .Values.topics.delivered | quote }}
- name: HITL_TOPICS__DEADLETTER
  value: {{ .Values.topics.deadletter | quote }}
- name: HITL_TOPICS__HOLDS
  value: {{ .Values.topics.holds | quote }}
- name: HITL_TOPICS__REVIEW_TASKS
  value: {{ .Values.topics.reviewTasks | quote }}
- name: HITL_TOPICS__REVIEW_DECISIONS
  value: {{ .Values.topics.reviewDecisions | quote }}
- name: HITL_TOPICS__BLOCKED
  value: {{ .Values.topics.blocked | quote }}
- name: HITL_TOPICS__TRAINING
  value: {{ .Values.topics.training | quote }}
- name: HITL_TOPICS__AUDIT
  value: {{ .Values.topics.audit | quote }}
- name: HITL_TOPICS__CALIBRATION
  value: {{ .Values.topics.calibration | quote }}
- name: HITL_TOPICS__PARTITIONS
  value: {{ include "hitl-gateway.str" .Values.kafka.inputPartitions | quote }}
- name: HITL_TOPICS__REPLICATION_FACTOR
  value: {{ include "hitl-gateway.str" .Values.topics.replicationFactor | quote }}
{{- if not (kindIs "invalid" .Values.topics.minInsyncReplicas) }}
- name: HITL_TOPICS__MIN_INSYNC_REPLICAS
  value: {{ include "hitl-gateway.str" .Values.topics.minInsyncReplicas | quote }}
{{- end }}
- name: HITL_POLICY__DIR
  value: {{ printf "%s/policies" (include "hitl-gateway.configDir" .) | quote }}
- name: HITL_POLICY__POOLS_FILE
  value: {{ printf "%s/pools.yaml" (include "hitl-gateway.configDir" .) | quote }}
- name: HITL_POLICY__ROUTING_FILE
  value: {{ printf "%s/routing.yaml" (include "hitl-gateway.configDir" .) | quote }}
- name: HITL_POLICY__RELOAD_INTERVAL_S
  value: {{ include "hitl-gateway.str" .Values.config.reloadIntervalSeconds | quote }}
- name: HITL_REVIEW__REVIEWERS_FILE
  value: {{ printf "%s/%s" (include "hitl-gateway.reviewersDir" .) .Values.reviewers.key | quote }}
{{- if .Values.audit.keys.existingSecret }}
- name: HITL_AUDIT__KEYS_FILE
  value: {{ printf "%s/%s" (include "hitl-gateway.auditKeysDir" .) .Values.audit.keys.key | quote }}
- name: HITL_AUDIT__ACTIVE_KEY_ID
  value: {{ .Values.audit.activeKeyId | quote }}
{{- end }}
{{- if .Values.decisions.keys.existingSecret }}
- name: HITL_DECISIONS__KEYS_FILE
  value: {{ printf "%s/%s" (include "hitl-gateway.decisionKeysDir" .) .Values.decisions.keys.key | quote }}
- name: HITL_DECISIONS__GATEWAY_KEY_ID
  value: {{ .Values.decisions.gatewayKeyId | quote }}
{{- end }}
{{- if .Values.oidc.issuer }}
- name: HITL_OIDC__ISSUER
  value: {{ .Values.oidc.issuer | quote }}
- name: HITL_OIDC__AUDIENCE
  value: {{ .Values.oidc.audience | quote }}
- name: HITL_OIDC__ID_CLAIM
  value: {{ .Values.oidc.idClaim | quote }}
- name: HITL_OIDC__GROUPS_CLAIM
  value: {{ .Values.oidc.groupsClaim | quote }}
- name: HITL_OIDC__GROUPS_FILE
  value: {{ printf "%s/groups.yaml" (include "hitl-gateway.oidcDir" .) | quote }}
{{- with .Values.oidc.clientId }}
- name: HITL_OIDC__CLIENT_ID
  value: {{ . | quote }}
- name: HITL_OIDC__SCOPES
  value: {{ $.Values.oidc.scopes | quote }}
{{- end }}
{{- with .Values.oidc.redirectUrl }}
- name: HITL_OIDC__REDIRECT_URL
  value: {{ . | quote }}
{{- end }}
{{- if .Values.oidc.clientSecret.existingSecret }}
- name: HITL_OIDC__CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.oidc.clientSecret.existingSecret }}
      key: {{ .Values.oidc.clientSecret.key }}
{{- end }}
{{- end }}
- name: HITL_REDIS__URL
  value: {{ .Values.redis.url | quote }}
- name: HITL_REDIS__KEY_PREFIX
  value: {{ .Values.redis.keyPrefix | quote }}
{{- if $redisSecret }}
- name: HITL_REDIS__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $redisSecret }}
      key: {{ .Values.redis.passwordKey }}
{{- end }}
{{- if $notifySecret }}
- name: HITL_NOTIFY__WEBHOOK_URL
  valueFrom:
    secretKeyRef:
      name: {{ $notifySecret }}
      key: {{ .Values.notify.webhook.urlKey }}
{{- end }}
- name: HITL_NOTIFY__FORMAT
  value: {{ .Values.notify.format | quote }}
- name: HITL_HTTP__HOST
  value: "0.0.0.0"
- name: HITL_HTTP__PORT
  value: {{ include "hitl-gateway.str" .Values.http.port | quote }}
- name: HITL_RUNTIME__SHUTDOWN_TIMEOUT_S
  value: {{ include "hitl-gateway.str" .Values.runtime.shutdownTimeoutSeconds | quote }}
- name: HITL_RUNTIME__LOG_FORMAT
  value: {{ .Values.runtime.logFormat | quote }}
- name: HITL_RUNTIME__LOG_LEVEL
  value: {{ .Values.runtime.logLevel | quote }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ include "hitl-gateway.str" $value | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{- toYaml . | nindent 12 }}
{{- end }}
{{- end }}

{{/* Whole directories, never subPath: the kubelet's atomic swap of a ConfigMap or Secret
volume reaches the pod only through a directory mount. */}}
{{- define "hitl-gateway.volumeMounts" -}}
{{- $reviewersSecret := include "hitl-gateway.reviewersSecret" . }}
{{- $tls := and (include "hitl-gateway.kafkaUsesTls" .) .Values.kafka.tls.existingSecret -}}
- name: config
  mountPath: {{ include "hitl-gateway.configDir" . }}
  readOnly: true
{{- if $reviewersSecret }}
- name: reviewers
  mountPath: {{ include "hitl-gateway.reviewersDir" . }}
  readOnly: true
{{- end }}
{{- if $tls }}
- name: kafka-tls
  mountPath: {{ include "hitl-gateway.kafkaTlsDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.audit.keys.existingSecret }}
- name: audit-keys
  mountPath: {{ include "hitl-gateway.auditKeysDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.decisions.keys.existingSecret }}
- name: decision-keys
  mountPath: {{ include "hitl-gateway.decisionKeysDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.oidc.issuer }}
- name: oidc
  mountPath: {{ include "hitl-gateway.oidcDir" . }}
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "hitl-gateway.volumes" -}}
{{- $configFiles := include "hitl-gateway.configFiles" . | fromJson }}
{{- $reviewersSecret := include "hitl-gateway.reviewersSecret" . }}
{{- $tls := and (include "hitl-gateway.kafkaUsesTls" .) .Values.kafka.tls.existingSecret -}}
- name: config
  configMap:
    name: {{ include "hitl-gateway.fullname" . }}-config
    items:
      {{- range $path := keys $configFiles | sortAlpha }}
      - key: {{ include "hitl-gateway.configKey" $path }}
        path: {{ $path }}
      {{- end }}
{{- if $reviewersSecret }}
- name: reviewers
  secret:
    secretName: {{ $reviewersSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.reviewers.key }}
        path: {{ .Values.reviewers.key }}
{{- end }}
{{- if $tls }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if .Values.audit.keys.existingSecret }}
- name: audit-keys
  secret:
    secretName: {{ .Values.audit.keys.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.audit.keys.key }}
        path: {{ .Values.audit.keys.key }}
{{- end }}
{{- if .Values.decisions.keys.existingSecret }}
- name: decision-keys
  secret:
    secretName: {{ .Values.decisions.keys.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.decisions.keys.key }}
        path: {{ .Values.decisions.keys.key }}
{{- end }}
{{- if .Values.oidc.issuer }}
- name: oidc
  configMap:
    name: {{ include "hitl-gateway.fullname" . }}-oidc-groups
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmp.sizeLimit }}
{{- end }}
