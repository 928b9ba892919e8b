{{/* The application's name: app.name, or the release name. */}}
{{- define "busmesh.name" -}}
{{- default .Release.Name .Values.app.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "busmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "busmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "busmesh.labels" -}}
{{ include "busmesh.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The broker URL the sidecar gets as BUSMESH_BROKER (unless from a Secret). */}}
{{- define "busmesh.brokerURL" -}}
{{- $kind := .Values.broker.kind -}}
{{- if not (has $kind (list "nats" "rabbitmq" "kafka")) -}}
{{- fail (printf "broker.kind: %q is not a broker (allowed: nats, rabbitmq, kafka)" $kind) -}}
{{- end -}}
{{- if .Values.broker.create -}}
{{- if eq $kind "nats" -}}
nats://{{ .Release.Name }}-nats:4222
{{- else if eq $kind "kafka" -}}
kafka://{{ .Release.Name }}-kafka-bootstrap:9092
{{- else -}}
amqp://$(BUSMESH_RABBITMQ_USERNAME):$(BUSMESH_RABBITMQ_PASSWORD)@{{ .Release.Name }}-rabbitmq:5672/
{{- end -}}
{{- else -}}
{{- required "broker.url: the broker URL (example: nats://nats:4222), or broker.existingSecret, or broker.create" .Values.broker.url -}}
{{- end -}}
{{- end -}}

{{/* The sidecar's config file (README, Configuration). The broker comes
from BUSMESH_BROKER. */}}
{{- define "busmesh.config" -}}
{{- $v := .Values -}}
{{- if and (not $v.mesh.service) (not $v.mesh.upstreams) -}}
{{- fail "mesh.service (to serve) or mesh.upstreams (to call) must be set" -}}
{{- end -}}
{{- if not (has $v.mesh.protocol (list "http" "grpc" "https" "grpcs")) -}}
{{- fail (printf "mesh.protocol: %q is not a protocol (allowed: http, grpc, https, grpcs)" $v.mesh.protocol) -}}
{{- end -}}
{{- if and (or $v.appTLS.secretName $v.appTLS.serverName) (not (has $v.mesh.protocol (list "https" "grpcs"))) -}}
{{- fail (printf "appTLS: TLS to the application needs mesh.protocol https or grpcs, not %s" $v.mesh.protocol) -}}
{{- end -}}
{{- if and $v.allow (not $v.mesh.service) -}}
{{- fail "allow: rules for who may call mesh.service, which is not set" -}}
{{- end -}}
{{- if and $v.allow (not $v.identity.secretName) -}}
{{- fail "allow: the rules check callers' identities, so the sidecar needs its own: set identity.secretName" -}}
{{- end -}}
{{- $c := dict "admin" (printf "0.0.0.0:%v" $v.admin.port) "log" $v.sidecar.log -}}
{{- if $v.mesh.name -}}{{- $_ := set $c "mesh" $v.mesh.name -}}{{- end -}}
{{- if $v.mesh.service -}}
{{- $a := dict "service" $v.mesh.service "target" (printf "%s://127.0.0.1:%v" $v.mesh.protocol $v.app.port) -}}
{{- if $v.mesh.version -}}{{- $_ := set $a "version" $v.mesh.version -}}{{- end -}}
{{- if $v.allow -}}{{- $_ := set $a "allow" $v.allow -}}{{- end -}}
{{- if $v.mesh.health -}}
{{- $_ := set $a "health" (dict "http" $v.mesh.health) -}}
{{- else if has $v.mesh.protocol (list "grpc" "grpcs") -}}
{{- $_ := set $a "health" (dict "grpc" true) -}}
{{- end -}}
{{- $tls := dict -}}
{{- with $v.appTLS.secretName -}}
{{- $tls = dict "ca" "/etc/busmesh/app-tls/ca.crt" "cert" "/etc/busmesh/app-tls/tls.crt" "key" "/etc/busmesh/app-tls/tls.key" -}}
{{- end -}}
{{- with $v.appTLS.serverName -}}{{- $_ := set $tls "server_name" . -}}{{- end -}}
{{- if $tls -}}{{- $_ := set $a "tls" $tls -}}{{- end -}}
{{- $_ := set $c "adapter" $a -}}
{{- end -}}
{{- if $v.mesh.upstreams -}}
{{- $u := dict -}}
{{- range $svc, $port := $v.mesh.upstreams -}}
{{- $_ := set $u $svc (printf "127.0.0.1:%v" $port) -}}
{{- end -}}
{{- $_ := set $c "ambassador" (dict "service" (default (include "busmesh.name" .) $v.mesh.service) "http" (printf "127.0.0.1:%v" $v.mesh.sharedPort) "upstreams" $u) -}}
{{- end -}}
{{- if $v.identity.secretName -}}
{{- $_ := set $c "identity" (dict "cert" "/etc/busmesh/identity/tls.crt" "key" "/etc/busmesh/identity/tls.key" "ca" "/etc/busmesh/identity/ca.crt") -}}
{{- end -}}
{{- toYaml (mergeOverwrite $c (deepCopy $v.sidecar.extraConfig)) -}}
{{- end -}}

{{/* The name of the Secret holding the admin token, if any. */}}
{{- define "busmesh.tokenSecret" -}}
{{- if .Values.admin.token.existingSecret -}}
{{- .Values.admin.token.existingSecret -}}
{{- else if .Values.admin.token.value -}}
{{- include "busmesh.name" . }}-busmesh-admin-token
{{- end -}}
{{- end -}}
