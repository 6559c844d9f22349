{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "codepipeline-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart>, or just <release> when the
release name already contains the chart name. Truncated to 63 characters
(DNS label limit).
*/}}
{{- define "codepipeline-gateway.fullname" -}}
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
{{- define "codepipeline-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels. Only immutable identity goes here: a Deployment's selector
cannot change after creation, so never add version or chart labels.
*/}}
{{- define "codepipeline-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "codepipeline-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels for every resource.
*/}}
{{- define "codepipeline-gateway.labels" -}}
helm.sh/chart: {{ include "codepipeline-gateway.chart" . }}
{{ include "codepipeline-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ (.Values.image.tag | default .Chart.AppVersion) | toString | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: codepipeline-gateway
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The annotations of one resource: commonAnnotations, then the resource's own
(which win). Renders nothing when both are empty.
Call: include "codepipeline-gateway.annotations" (dict "root" . "own" .Values.x.annotations)
*/}}
{{- define "codepipeline-gateway.annotations" -}}
{{- $all := merge (deepCopy (.own | default dict)) (.root.Values.commonAnnotations | default dict) }}
{{- with $all }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Name of the ServiceAccount to use.
*/}}
{{- define "codepipeline-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "codepipeline-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository@digest when a digest is set, else
repository:tag with the tag defaulting to the chart's appVersion.
*/}}
{{- define "codepipeline-gateway.image" -}}
{{- $registry := .Values.global.imageRegistry | default .Values.image.registry }}
{{- $repository := ternary (printf "%s/%s" $registry .Values.image.repository) .Values.image.repository (ne $registry "") }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/*
The test pod's image; global.imageRegistry (a mirror for every image) applies
to it too, replacing the registry its repository names.
*/}}
{{- define "codepipeline-gateway.testImage" -}}
{{- $repository := .Values.tests.image.repository }}
{{- with .Values.global.imageRegistry }}
{{- $parts := splitList "/" $repository }}
{{- if and (gt (len $parts) 1) (or (contains "." (first $parts)) (contains ":" (first $parts)) (eq (first $parts) "localhost")) }}
{{- $repository = join "/" (rest $parts) }}
{{- end }}
{{- $repository = printf "%s/%s" . $repository }}
{{- end }}
{{- printf "%s:%s" $repository .Values.tests.image.tag }}
{{- end }}

{{/*
The gateway's configuration: the one place where values become the
binary's settings. Rendered as ConfigMap data (env vars the binary reads)
and hashed into the pod's checksum/config annotation.
*/}}
{{- define "codepipeline-gateway.config" -}}
{{- $g := .Values.gateway -}}
CPGW_LISTEN: {{ printf "%s:%d" $g.bindAddress (int .Values.ports.grpc) | quote }}
CPGW_ADMIN_LISTEN: {{ printf "%s:%d" $g.bindAddress (int .Values.ports.metrics) | quote }}
CPGW_RATE_LIMIT_RPS: {{ $g.rateLimit.rps | toString | quote }}
CPGW_RATE_LIMIT_BURST: {{ $g.rateLimit.burst | int | toString | quote }}
CPGW_RATE_LIMIT_QUEUE: {{ $g.rateLimit.queue | int | toString | quote }}
CPGW_RATE_LIMIT_ADAPTIVE: {{ $g.rateLimit.adaptive | toString | quote }}
CPGW_RETRY_MAX_ATTEMPTS: {{ $g.retry.maxAttempts | int | toString | quote }}
CPGW_RETRY_BASE_DELAY: {{ $g.retry.baseDelay | quote }}
CPGW_RETRY_MAX_DELAY: {{ $g.retry.maxDelay | quote }}
CPGW_ATTEMPT_TIMEOUT: {{ $g.attemptTimeout | quote }}
CPGW_DEFAULT_DEADLINE: {{ $g.defaultDeadline | quote }}
CPGW_MAX_CONNECTION_AGE: {{ $g.maxConnectionAge | quote }}
{{- with $g.limits }}
CPGW_MAX_CONCURRENT_STREAMS: {{ .maxConcurrentStreams | int64 | toString | quote }}
CPGW_MAX_CALLS_IN_FLIGHT: {{ .maxCallsInFlight | int64 | toString | quote }}
CPGW_MAX_SUBSCRIPTIONS: {{ .maxSubscriptions | int64 | toString | quote }}
CPGW_UPSTREAM_CONCURRENCY: {{ .upstreamConcurrency | int64 | toString | quote }}
CPGW_REQUEST_ARRIVAL_TIMEOUT: {{ .requestArrivalTimeout | quote }}
CPGW_HANDSHAKE_TIMEOUT: {{ .handshakeTimeout | quote }}
CPGW_IDLE_TIMEOUT: {{ .idleTimeout | quote }}
CPGW_KEEPALIVE_INTERVAL: {{ .keepaliveInterval | quote }}
CPGW_KEEPALIVE_TIMEOUT: {{ .keepaliveTimeout | quote }}
CPGW_MAX_PENDING_RESET_STREAMS: {{ .maxPendingResetStreams | int64 | toString | quote }}
{{- end }}
CPGW_SHUTDOWN_DELAY: {{ $g.shutdownDelay | quote }}
CPGW_SHUTDOWN_GRACE: {{ $g.shutdownGrace | quote }}
CPGW_LOG_FORMAT: {{ $g.logFormat | quote }}
RUST_LOG: {{ $g.logLevel | quote }}
{{- with .Values.aws.region }}
AWS_REGION: {{ . | quote }}
{{- end }}
{{- with .Values.aws.endpointUrl }}
AWS_ENDPOINT_URL: {{ . | quote }}
{{- end }}
{{- with .Values.tracing.otlpEndpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- with .Values.tracing.serviceName }}
OTEL_SERVICE_NAME: {{ . | quote }}
{{- end }}
{{- if .Values.clientTokens.enabled }}
CPGW_CLIENT_TOKENS_FILE: {{ printf "%s/%s" (include "codepipeline-gateway.clientTokensDir" .) .Values.clientTokens.key | quote }}
CPGW_CLIENT_TOKENS_RELOAD: {{ .Values.clientTokens.reloadInterval | quote }}
{{- end }}
CPGW_REFLECTION: {{ .Values.gateway.reflection | toString | quote }}
{{- $a := .Values.auth }}
CPGW_AUTH_RELOAD: {{ $a.reloadInterval | quote }}
{{- if $a.allowUnauthenticated }}
CPGW_ALLOW_UNAUTHENTICATED: "true"
{{- end }}
{{- with $a.serviceAccountTokens }}
{{- if .enabled }}
CPGW_AUTH_JWT_ISSUER: {{ .issuer | quote }}
CPGW_AUTH_JWT_AUDIENCE: {{ join "," .audiences | quote }}
CPGW_AUTH_JWKS_REFRESH: {{ .jwksRefresh | quote }}
{{- if .jwksUrl }}
CPGW_AUTH_JWKS_URL: {{ .jwksUrl | quote }}
{{- else }}
CPGW_AUTH_JWKS_URL: "https://kubernetes.default.svc/openid/v1/jwks"
CPGW_AUTH_JWKS_CA_FILE: {{ printf "%s/ca.crt" (include "codepipeline-gateway.kubeApiDir" $) | quote }}
CPGW_AUTH_JWKS_BEARER_TOKEN_FILE: {{ printf "%s/token" (include "codepipeline-gateway.kubeApiDir" $) | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if $a.staticTokens.enabled }}
CPGW_AUTH_TOKENS_FILE: {{ printf "%s/%s" (include "codepipeline-gateway.authTokensDir" .) $a.staticTokens.key | quote }}
{{- end }}
{{- if $a.policy.enabled }}
CPGW_POLICY_FILE: {{ printf "%s/policy.yaml" (include "codepipeline-gateway.policyDir" .) | quote }}
{{- end }}
{{- if .Values.targets }}
CPGW_TARGETS_FILE: {{ printf "%s/targets.yaml" (include "codepipeline-gateway.targetsDir" .) | quote }}
{{- end }}
{{- if .Values.tls.enabled }}
CPGW_TLS_CERT_FILE: {{ printf "%s/tls.crt" (include "codepipeline-gateway.tlsDir" .) | quote }}
CPGW_TLS_KEY_FILE: {{ printf "%s/tls.key" (include "codepipeline-gateway.tlsDir" .) | quote }}
{{- if .Values.tls.clientCertificates }}
CPGW_TLS_CLIENT_CA_FILE: {{ printf "%s/ca.crt" (include "codepipeline-gateway.tlsDir" .) | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret holding the TLS files: the operator's, or the Certificate's. */}}
{{- define "codepipeline-gateway.tlsSecret" -}}
{{- default (printf "%s-tls" (include "codepipeline-gateway.fullname" .)) .Values.tls.existingSecret }}
{{- end }}
{{- define "codepipeline-gateway.tlsDir" -}}
/etc/codepipeline-gateway/tls
{{- end }}

{{/*
Whether the gateway reads the token issuer's keys from the API server (with
its own projected token and the cluster CA), which needs a volume and RBAC.
*/}}
{{- define "codepipeline-gateway.keysFromApiServer" -}}
{{- if and .Values.auth.serviceAccountTokens.enabled (not .Values.auth.serviceAccountTokens.jwksUrl) }}true{{ end }}
{{- end }}

{{/* Mount points of the access-control files. */}}
{{- define "codepipeline-gateway.kubeApiDir" -}}
/var/run/secrets/codepipeline-gateway/kube-api
{{- end }}
{{- define "codepipeline-gateway.authTokensDir" -}}
/etc/codepipeline-gateway/auth-tokens
{{- end }}
{{- define "codepipeline-gateway.targetsDir" -}}
/etc/codepipeline-gateway/targets
{{- end }}
{{- define "codepipeline-gateway.policyDir" -}}
/etc/codepipeline-gateway/policy
{{- end }}

{{/*
Directory where the client-token Secret is mounted (clientTokens.enabled).
The whole directory is mounted, never a subPath: only directory mounts of a
Secret receive its updates, which the gateway picks up by re-reading the file.
*/}}
{{- define "codepipeline-gateway.clientTokensDir" -}}
/etc/codepipeline-gateway/client-tokens
{{- end }}

{{/*
File mode of the mounted client-token file. Secret files belong to root
unless the pod sets fsGroup (then they are group-owned by it), so 0440 is
readable by the non-root gateway only with an fsGroup; without one the file
must be world-readable (0444) for uid 65532. Either way it is read-only.
Rendered in decimal (288 = 0440, 292 = 0444) so that no YAML reader can
take it for a decimal 440.
*/}}
{{- define "codepipeline-gateway.clientTokensMode" -}}
{{- if and .Values.podSecurityContext (not (kindIs "invalid" .Values.podSecurityContext.fsGroup)) }}
{{- 288 }}
{{- else }}
{{- 292 }}
{{- end }}
{{- end }}

{{/*
gateway.shutdownGrace in whole seconds (rounded up). The schema limits the
value to <n>ms, <n>s or <n>m so that it can be computed here.
*/}}
{{- define "codepipeline-gateway.seconds" -}}
{{- $name := index . 0 }}
{{- $g := index . 1 | toString }}
{{- if hasSuffix "ms" $g }}
{{- div (add (trimSuffix "ms" $g | int) 999) 1000 }}
{{- else if hasSuffix "s" $g }}
{{- trimSuffix "s" $g | int }}
{{- else if hasSuffix "m" $g }}
{{- mul (trimSuffix "m" $g | int) 60 }}
{{- else }}
{{- fail (printf "%s %q must be <n>ms, <n>s or <n>m" $name $g) }}
{{- end }}
{{- end }}

{{/*
Seconds from SIGTERM to the end of the drain: the shutdown delay (serving
while NOT_SERVING) plus the shutdown grace (calls in flight finishing).
*/}}
{{- define "codepipeline-gateway.shutdownSeconds" -}}
{{- $delay := include "codepipeline-gateway.seconds" (list "gateway.shutdownDelay" .Values.gateway.shutdownDelay) | int }}
{{- $grace := include "codepipeline-gateway.seconds" (list "gateway.shutdownGrace" .Values.gateway.shutdownGrace) | int }}
{{- add $delay $grace }}
{{- end }}

{{/*
Pod terminationGracePeriodSeconds: the explicit value, or shutdown delay +
shutdown grace + 10s, so the kubelet never kills the gateway while it still
serves or drains.
*/}}
{{- define "codepipeline-gateway.terminationGracePeriodSeconds" -}}
{{- $grace := include "codepipeline-gateway.shutdownSeconds" . | int }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $grace 10 }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds | int }}
{{- end }}
{{- end }}

{{/*
The replica count the cluster will run at least: minReplicas under an HPA,
replicaCount otherwise.
*/}}
{{- define "codepipeline-gateway.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- .Values.autoscaling.minReplicas | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/*
Milliseconds in a duration the schema accepted (humantime units ns to h, as
in 1m30s), rounded down, so that two durations can be compared.
*/}}
{{- define "codepipeline-gateway.milliseconds" -}}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9]+(ns|us|ms|s|m|h)" (toString .) -1 }}
{{- $n := regexFind "^[0-9]+" . | float64 }}
{{- $unit := trimPrefix (regexFind "^[0-9]+" .) . }}
{{- $scale := get (dict "ns" 0.000001 "us" 0.001 "ms" 1.0 "s" 1000.0 "m" 60000.0 "h" 3600000.0) $unit }}
{{- $total = addf $total (mulf $n $scale) }}
{{- end }}
{{- floor $total | int64 }}
{{- end }}

{{/*
Guards against values that are each valid but contradict one another. The
schema checks types and ranges; these check relations between keys.
*/}}
{{- define "codepipeline-gateway.validate" -}}
{{- $v := .Values }}
{{- if and $v.serviceMonitor.enabled $v.podMonitor.enabled }}
{{- fail "serviceMonitor.enabled and podMonitor.enabled: choose one, or Prometheus scrapes every pod twice" }}
{{- end }}
{{- $retry := $v.gateway.retry }}
{{- $base := include "codepipeline-gateway.milliseconds" $retry.baseDelay | int64 }}
{{- $max := include "codepipeline-gateway.milliseconds" $retry.maxDelay | int64 }}
{{- if lt $max $base }}
{{- fail (printf "gateway.retry.maxDelay (%s) must not be shorter than gateway.retry.baseDelay (%s); the gateway refuses to start otherwise" $retry.maxDelay $retry.baseDelay) }}
{{- end }}
{{- with $v.auth.serviceAccountTokens }}
{{- if and .enabled (lt (include "codepipeline-gateway.milliseconds" .jwksRefresh | int64) 10000) }}
{{- fail (printf "auth.serviceAccountTokens.jwksRefresh (%s) must be at least 10s; the gateway refuses to start otherwise" .jwksRefresh) }}
{{- end }}
{{- end }}
{{- $shutdown := include "codepipeline-gateway.shutdownSeconds" . | int }}
{{- if not (kindIs "invalid" $v.terminationGracePeriodSeconds) }}
{{- if le ($v.terminationGracePeriodSeconds | int) $shutdown }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than gateway.shutdownDelay + gateway.shutdownGrace (%s + %s = %ds), or the kubelet kills the gateway while it still serves or drains" ($v.terminationGracePeriodSeconds | int) $v.gateway.shutdownDelay $v.gateway.shutdownGrace $shutdown) }}
{{- end }}
{{- end }}
{{- if $v.autoscaling.enabled }}
{{- if gt ($v.autoscaling.minReplicas | int) ($v.autoscaling.maxReplicas | int) }}
{{- fail (printf "autoscaling.minReplicas (%d) must not exceed autoscaling.maxReplicas (%d)" ($v.autoscaling.minReplicas | int) ($v.autoscaling.maxReplicas | int)) }}
{{- end }}
{{- if lt ($v.replicaCount | int) ($v.autoscaling.minReplicas | int) }}
{{- fail (printf "replicaCount (%d) is below autoscaling.minReplicas (%d): with autoscaling enabled set replicaCount within [minReplicas, maxReplicas] or lower minReplicas" ($v.replicaCount | int) ($v.autoscaling.minReplicas | int)) }}
{{- end }}
{{- if gt ($v.replicaCount | int) ($v.autoscaling.maxReplicas | int) }}
{{- fail (printf "replicaCount (%d) is above autoscaling.maxReplicas (%d)" ($v.replicaCount | int) ($v.autoscaling.maxReplicas | int)) }}
{{- end }}
{{- if and (kindIs "invalid" $v.autoscaling.targetCPUUtilizationPercentage) (kindIs "invalid" $v.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling is enabled but neither targetCPUUtilizationPercentage nor targetMemoryUtilizationPercentage is set" }}
{{- end }}
{{- end }}
{{- if $v.podDisruptionBudget.enabled }}
{{- $pdb := $v.podDisruptionBudget }}
{{- $hasMin := not (kindIs "invalid" $pdb.minAvailable) }}
{{- $hasMax := not (kindIs "invalid" $pdb.maxUnavailable) }}
{{- if and $hasMin $hasMax }}
{{- fail "podDisruptionBudget: set only one of minAvailable and maxUnavailable (set the other to null)" }}
{{- end }}
{{- if not (or $hasMin $hasMax) }}
{{- fail "podDisruptionBudget: set one of minAvailable or maxUnavailable" }}
{{- end }}
{{- $replicas := include "codepipeline-gateway.minReplicas" . | int }}
{{- if and $hasMin (not (kindIs "string" $pdb.minAvailable)) }}
{{- if ge ($pdb.minAvailable | int) $replicas }}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be below the replica count (%d), or no pod can ever be evicted and node drains hang" ($pdb.minAvailable | int) $replicas) }}
{{- end }}
{{- end }}
{{- if and $hasMax (not (kindIs "string" $pdb.maxUnavailable)) }}
{{- if eq ($pdb.maxUnavailable | int) 0 }}
{{- fail "podDisruptionBudget.maxUnavailable 0 blocks every eviction and node drains hang" }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.clientTokens.enabled (empty $v.clientTokens.existingSecret) }}
{{- fail "clientTokens.enabled needs clientTokens.existingSecret: create a Secret holding the JSON map (kubectl create secret generic partner-client-tokens --from-file=client-tokens.json=./tokens.json) and name it here; the chart never creates it" }}
{{- end }}
{{- if and $v.networkPolicy.enabled (empty $v.networkPolicy.grpcFrom) }}
{{- fail "networkPolicy.enabled needs networkPolicy.grpcFrom: list the namespaces/pods of your job workers, or no worker can reach the gateway" }}
{{- end }}
{{- $a := $v.auth }}
{{- if and $a.staticTokens.enabled (empty $a.staticTokens.existingSecret) }}
{{- fail "auth.staticTokens.enabled needs auth.staticTokens.existingSecret: create a Secret mapping caller names to the SHA-256 of their tokens (kubectl create secret generic gateway-tokens --from-file=tokens.yaml) and name it here; the chart never creates it" }}
{{- end }}
{{- $t := $v.tls }}
{{- if and $t.enabled (empty $t.existingSecret) (not $t.certManager.enabled) }}
{{- fail "tls.enabled needs tls.existingSecret (a kubernetes.io/tls Secret) or tls.certManager.enabled" }}
{{- end }}
{{- if and $t.certManager.enabled (not $t.enabled) }}
{{- fail "tls.certManager.enabled needs tls.enabled: the Certificate would go unused" }}
{{- end }}
{{- if and $t.certManager.enabled (empty $t.certManager.issuerRef.name) }}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name" }}
{{- end }}
{{- if and $t.clientCertificates (not $t.enabled) }}
{{- fail "tls.clientCertificates needs tls.enabled" }}
{{- end }}
{{- if not (or $a.serviceAccountTokens.enabled $a.staticTokens.enabled $a.allowUnauthenticated (and $t.enabled $t.clientCertificates)) }}
{{- fail "no way for callers to authenticate: enable auth.serviceAccountTokens, auth.staticTokens or tls.clientCertificates, or set auth.allowUnauthenticated (not for production); the gateway refuses to start otherwise" }}
{{- end }}
{{- end }}

{{/*
Labels of the `helm test` pod. Its name label differs from the gateway's on
purpose: a pod matching the Deployment's selector could be adopted by its
ReplicaSet.
*/}}
{{- define "codepipeline-gateway.testSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-test" (include "codepipeline-gateway.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "codepipeline-gateway.testLabels" -}}
helm.sh/chart: {{ include "codepipeline-gateway.chart" . }}
{{ include "codepipeline-gateway.testSelectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: test
{{- end }}

{{/*
The probes' action: native gRPC health on the gRPC port, or, with TLS (which
the kubelet's gRPC probes cannot speak), /healthz on the admin port, which
stops answering when the gateway starts draining.
*/}}
{{/*
Readiness: the gRPC health service, which says NOT_SERVING while shutting down
and while AWS refuses the gateway's identity; over TLS, where the kubelet's
gRPC probe cannot go, the admin port's /readyz says the same.
*/}}
{{- define "codepipeline-gateway.readinessAction" -}}
{{- if .Values.tls.enabled -}}
httpGet:
  path: /readyz
  port: metrics
{{- else -}}
grpc:
  port: {{ .Values.ports.grpc }}
{{- end }}
{{- end }}

{{/*
Liveness: only whether the process answers. Never the readiness state: a
refused AWS identity is not cured by a restart, and restarts would hide it.
*/}}
{{- define "codepipeline-gateway.livenessAction" -}}
httpGet:
  path: /healthz
  port: metrics
{{- end }}
