{{/* Chart name. */}}
{{- define "lookout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "lookout.fullname" -}}
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

{{- define "lookout.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{- define "lookout.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the pod. */}}
{{- define "lookout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lookout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object: commonLabels, then the chart's own (which win). */}}
{{- define "lookout.labels" -}}
{{- $own := dict
  "helm.sh/chart" (include "lookout.chart" .)
  "app.kubernetes.io/name" (include "lookout.name" .)
  "app.kubernetes.io/instance" .Release.Name
  "app.kubernetes.io/version" .Chart.AppVersion
  "app.kubernetes.io/managed-by" .Release.Service
  "app.kubernetes.io/part-of" "lookout" }}
{{- toYaml (mergeOverwrite (deepCopy (default dict .Values.commonLabels)) $own) }}
{{- end }}

{{/* Labels of the prometheus-operator objects: release for kube-prometheus-stack's selectors. */}}
{{- define "lookout.monitoringLabels" -}}
{{- $labels := include "lookout.labels" . | fromYaml }}
{{- if .Values.releaseLabel }}
{{- $_ := set $labels "release" .Release.Name }}
{{- end }}
{{- toYaml $labels }}
{{- end }}

{{- define "lookout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lookout.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lookout.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- $repo := .Values.image.repository }}
{{- if .Values.image.registry }}
{{- $repo = printf "%s/%s" .Values.image.registry .Values.image.repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" $repo $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{/*
The config file's text: the keys of .Values.config that are set, and with discovery.enabled the
`kubernetes:` section made of discovery's fields.
*/}}
{{- define "lookout.configYaml" -}}
{{- $c := dict }}
{{- range $k := list "modules" "defaults" "scheduler" "targets" }}
{{- $v := get $.Values.config $k }}
{{- if $v }}
{{- $_ := set $c $k $v }}
{{- end }}
{{- end }}
{{- with .Values.discovery }}
{{- if .enabled }}
{{- $k := dict "namespaces" (default list .namespaces) "kinds" .kinds "module" .module "events" .events }}
{{- with .labelSelector }}
{{- $_ := set $k "label_selector" . }}
{{- end }}
{{- $_ := set $c "kubernetes" $k }}
{{- end }}
{{- end }}
{{- toYaml $c }}
{{- end }}

{{/* Name of the Secret or ConfigMap holding the config. */}}
{{- define "lookout.configName" -}}
{{- default (include "lookout.fullname" .) .Values.configExistingSecretName }}
{{- end }}

{{/* "true" when ICMP is on: explicitly, or "auto" and a module uses prober: icmp. */}}
{{- define "lookout.icmpEnabled" -}}
{{- $on := false }}
{{- if eq (toString .Values.icmp.enabled) "auto" }}
{{- range $name, $m := .Values.config.modules }}
{{- if and (kindIs "map" $m) (eq (toString $m.prober) "icmp") }}
{{- $on = true }}
{{- end }}
{{- end }}
{{- else if eq (toString .Values.icmp.enabled) "true" }}
{{- $on = true }}
{{- end }}
{{- if $on }}true{{ end }}
{{- end }}

{{/*
Seconds in a Prometheus-style duration ("90s", "1h30m", "2d", "500ms" rounds down to whole seconds),
as lookout reads max_age. Fails the render on anything else, naming the value.
*/}}
{{- define "lookout.durationSeconds" -}}
{{- $d := toString . }}
{{- if not (regexMatch "^([0-9]+(ms|s|m|h|d|w|y))+$" $d) }}
{{- fail (printf "max_age %q is not a duration like 90s, 10m, 1h30m or 2d" $d) }}
{{- end }}
{{- $units := dict "ms" 0 "s" 1 "m" 60 "h" 3600 "d" 86400 "w" 604800 "y" 31536000 }}
{{- $total := 0 }}
{{- range $part := regexFindAll "[0-9]+(ms|s|m|h|d|w|y)" $d -1 }}
{{- $n := regexFind "^[0-9]+" $part | atoi }}
{{- $unit := trimPrefix (regexFind "^[0-9]+" $part) $part }}
{{- if eq $unit "ms" }}
{{- $total = add $total (div $n 1000) }}
{{- else }}
{{- $total = add $total (mul $n (get $units $unit)) }}
{{- end }}
{{- end }}
{{- $total }}
{{- end }}

{{/* Modules with a max_age in their prober section, as a list of {module, seconds}. */}}
{{- define "lookout.maxAges" -}}
{{- $out := list }}
{{- range $name, $m := .Values.config.modules }}
{{- if kindIs "map" $m }}
{{- range $section, $s := $m }}
{{- if and (kindIs "map" $s) (hasKey $s "max_age") }}
{{- $out = append $out (dict "module" $name "seconds" (include "lookout.durationSeconds" $s.max_age)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml (dict "items" $out) }}
{{- end }}

{{/*
Labels of an object as one map, so a key given twice (commonLabels, releaseLabel, the object's own
labels) appears once, the later source winning. Call with (dict "ctx" $ "extra" MAP "monitoring" BOOL).
*/}}
{{- define "lookout.labelsWith" -}}
{{- $base := include (ternary "lookout.monitoringLabels" "lookout.labels" (default false .monitoring)) .ctx | fromYaml }}
{{- toYaml (mergeOverwrite $base (default dict .extra)) }}
{{- end }}

{{/* The Secret holding the web config (--web.config.file), or "" when there is none. */}}
{{- define "lookout.webConfigName" -}}
{{- if .Values.webConfigExistingSecretName -}}
{{- .Values.webConfigExistingSecretName -}}
{{- else if .Values.webConfig -}}
{{- printf "%s-web" (include "lookout.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
A container probe adapted to the chart's own web config: an httpGet probe uses HTTPS when
webConfig turns TLS on, and becomes a tcpSocket check when webConfig asks for basic auth (the
kubelet has no credentials). Called with (dict "probe" P "root" $).
*/}}
{{- define "lookout.probe" -}}
{{- $probe := deepCopy .probe -}}
{{- $web := .root.Values.webConfig | default dict -}}
{{- if and $probe.httpGet (not .root.Values.webConfigExistingSecretName) -}}
{{- if $web.basic_auth_users -}}
{{- $_ := set $probe "tcpSocket" (dict "port" $probe.httpGet.port) -}}
{{- $_ := unset $probe "httpGet" -}}
{{- else if $web.tls_server_config -}}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" -}}
{{- end -}}
{{- end -}}
{{- toYaml $probe -}}
{{- end -}}

{{/* The headless Service governing the sharded StatefulSet (its pods' DNS names). */}}
{{- define "lookout.headlessName" -}}
{{- printf "%s-headless" (include "lookout.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/*
The selector of the chart's ServiceMonitors: lookout's Service. Sharded, the headless Service has
the same pods behind it and is left out, or every pod would be scraped twice.
*/}}
{{- define "lookout.serviceSelector" -}}
matchLabels:
  {{- include "lookout.selectorLabels" . | nindent 2 }}
{{- if .Values.sharding.enabled }}
matchExpressions:
  - key: lookout.dev/headless
    operator: DoesNotExist
{{- end }}
{{- end }}

{{/*
Name of discovery's Roles, RoleBindings or ClusterRole and ClusterRoleBinding. It carries the
release's namespace: the same release name in two namespaces must not share a ClusterRole, nor a
Role in a namespace both discover.
*/}}
{{- define "lookout.discoveryRbacName" -}}
{{- printf "%s-%s-discovery" (include "lookout.fullname" .) (include "lookout.namespace" .) }}
{{- end }}

{{/*
The RBAC rules discovery needs, and nothing more: read (get, list, watch) the kinds it is asked
to discover, and with events on, write Events (both APIs; lookout reports a rejected annotation on
its object).
*/}}
{{- define "lookout.discoveryRules" -}}
{{- $d := .Values.discovery }}
{{- $read := list "get" "list" "watch" }}
{{- $rules := list }}
{{- if has "ingress" $d.kinds }}
{{- $rules = append $rules (dict "apiGroups" (list "networking.k8s.io") "resources" (list "ingresses") "verbs" $read) }}
{{- end }}
{{- if has "service" $d.kinds }}
{{- $rules = append $rules (dict "apiGroups" (list "") "resources" (list "services") "verbs" $read) }}
{{- end }}
{{- if has "httproute" $d.kinds }}
{{- $rules = append $rules (dict "apiGroups" (list "gateway.networking.k8s.io") "resources" (list "httproutes") "verbs" $read) }}
{{- end }}
{{- if $d.events }}
{{- $rules = append $rules (dict "apiGroups" (list "") "resources" (list "events") "verbs" (list "create" "patch")) }}
{{- $rules = append $rules (dict "apiGroups" (list "events.k8s.io") "resources" (list "events") "verbs" (list "create" "patch")) }}
{{- end }}
{{- toYaml $rules }}
{{- end }}
