{{/*
The pod template of the Deployment and of the sharded StatefulSet (sharding.enabled): one pod spec,
so both modes run the same container. Sharded, it adds the --shard.* flags and leaves the history
volume to the StatefulSet's volumeClaimTemplates when persistence is on; sharded or discovering,
it sets POD_NAME.
*/}}
{{- define "lookout.podTemplate" -}}
{{- $icmp := include "lookout.icmpEnabled" . }}
{{- $netRaw := and $icmp .Values.icmp.netRaw }}
{{- $sharded := .Values.sharding.enabled }}
{{- /* The pod's name: the shard's ordinal, and the reporting instance of discovery's Events. */}}
{{- $podName := or $sharded .Values.discovery.enabled -}}
metadata:
  labels:
    {{- include "lookout.selectorLabels" . | nindent 4 }}
    {{- with .Values.pod.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- /* An existing Secret's content is unknown here: only the watch notices its changes. */}}
  {{- $checksum := and (eq .Values.configReload.method "restart") (not .Values.configExistingSecretName) }}
  {{- if or .Values.podAnnotations $checksum }}
  annotations:
    {{- if $checksum }}
    checksum/config: {{ include "lookout.configYaml" . | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
spec:
  serviceAccountName: {{ include "lookout.serviceAccountName" . }}
  {{- /* Discovery reads the Kubernetes API with the ServiceAccount's token; nothing else needs it. */}}
  automountServiceAccountToken: {{ .Values.discovery.enabled }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.image.pullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- $podSecurity := deepCopy .Values.podSecurityContext }}
  {{- if $netRaw }}
  {{- $_ := set $podSecurity "runAsNonRoot" false }}
  {{- $_ := set $podSecurity "runAsUser" 0 }}
  {{- $_ := set $podSecurity "runAsGroup" 0 }}
  {{- end }}
  {{- if and $icmp .Values.icmp.pingGroupRange }}
  {{- $sysctls := default list $podSecurity.sysctls }}
  {{- $sysctls = append $sysctls (dict "name" "net.ipv4.ping_group_range" "value" "0 2147483647") }}
  {{- $_ := set $podSecurity "sysctls" $sysctls }}
  {{- end }}
  {{- with $podSecurity }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.hostAliases }}
  hostAliases:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.dnsPolicy }}
  dnsPolicy: {{ . }}
  {{- end }}
  {{- with .Values.dnsConfig }}
  dnsConfig:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: lookout
      image: {{ include "lookout.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command: ["/usr/local/bin/lookout"]
      args:
        - --config.file=/etc/lookout/lookout.yml
        - --storage.path=/var/lib/lookout
        - --web.listen-address=:{{ .Values.containerPort }}
        {{- if include "lookout.webConfigName" . }}
        - --web.config.file=/etc/lookout-web/web.yml
        {{- end }}
        {{- if eq .Values.configReload.method "watch" }}
        - --config.watch=true
        - --config.watch-interval={{ .Values.configReload.watchInterval }}
        {{- else }}
        - --config.watch=false
        {{- end }}
        {{- if $sharded }}
        # The ordinal is the end of the pod's name (lookout-2); the kubelet expands $(POD_NAME).
        - --shard.index=$(POD_NAME)
        - --shard.count={{ .Values.replicas }}
        {{- $tls := or .Values.webConfig.tls_server_config .Values.webConfigExistingSecretName }}
        {{- if and .Values.sharding.takeOver.enabled (not $tls) }}
        # Every replica by its stable DNS name (the headless Service), this one included: each asks
        # the others' /-/healthy and probes its part of a silent one's share until it answers.
        - --shard.peers={{ range $i, $_ := until (int .Values.replicas) }}{{ if $i }},{{ end }}http://{{ include "lookout.fullname" $ }}-{{ $i }}.{{ include "lookout.headlessName" $ }}.{{ include "lookout.namespace" $ }}.svc:{{ $.Values.containerPort }}{{ end }}
        - --shard.peer-interval={{ .Values.sharding.takeOver.interval }}
        - --shard.peer-failures={{ .Values.sharding.takeOver.failures }}
        {{- end }}
        {{- end }}
        {{- range .Values.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      {{- if or .Values.extraEnv $podName }}
      env:
        {{- if $podName }}
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        {{- range $name, $value := .Values.extraEnv }}
        - name: {{ $name }}
          value: {{ $value | toString | quote }}
        {{- end }}
      {{- end }}
      {{- with .Values.extraEnvFromSecret }}
      envFrom:
        {{- range . }}
        - secretRef:
            name: {{ . }}
        {{- end }}
      {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.containerPort }}
          protocol: TCP
      {{- with .Values.livenessProbe }}
      livenessProbe:
        {{- include "lookout.probe" (dict "probe" . "root" $) | nindent 8 }}
      {{- end }}
      {{- with .Values.readinessProbe }}
      readinessProbe:
        {{- include "lookout.probe" (dict "probe" . "root" $) | nindent 8 }}
      {{- end }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- $security := deepCopy .Values.securityContext }}
      {{- if $netRaw }}
      {{- $_ := set $security "runAsNonRoot" false }}
      {{- $_ := set $security "runAsUser" 0 }}
      {{- $_ := set $security "runAsGroup" 0 }}
      {{- $caps := default dict $security.capabilities }}
      {{- $_ := set $caps "add" (append (default list $caps.add) "NET_RAW" | uniq) }}
      {{- $_ := set $security "capabilities" $caps }}
      {{- end }}
      {{- with $security }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        # The directory, not a subPath: a ConfigMap update then reaches the file lookout
        # watches (subPath mounts never change).
        - name: config
          mountPath: /etc/lookout
          readOnly: true
        # The history store: writable under readOnlyRootFilesystem; a PersistentVolumeClaim
        # with persistence.enabled, else an emptyDir that lasts as long as the pod.
        - name: history
          mountPath: /var/lib/lookout
        {{- if include "lookout.webConfigName" . }}
        # The web config: the directory too, so an updated Secret reaches the file lookout
        # re-reads on every request.
        - name: web-config
          mountPath: /etc/lookout-web
          readOnly: true
        {{- end }}
        {{- range .Values.extraSecretMounts }}
        - name: {{ .name }}
          mountPath: {{ .mountPath }}
          readOnly: {{ if hasKey . "readOnly" }}{{ .readOnly }}{{ else }}true{{ end }}
          {{- with .subPath }}
          subPath: {{ . }}
          {{- end }}
        {{- end }}
        {{- range .Values.extraConfigmapMounts }}
        - name: {{ .name }}
          mountPath: {{ .mountPath }}
          readOnly: {{ if hasKey . "readOnly" }}{{ .readOnly }}{{ else }}true{{ end }}
          {{- with .subPath }}
          subPath: {{ . }}
          {{- end }}
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      {{- if or .Values.secretConfig .Values.configExistingSecretName }}
      secret:
        secretName: {{ include "lookout.configName" . }}
      {{- else }}
      configMap:
        name: {{ include "lookout.configName" . }}
      {{- end }}
    {{- with include "lookout.webConfigName" . }}
    - name: web-config
      secret:
        secretName: {{ . }}
    {{- end }}
    {{- /* Sharded with persistence, "history" is the StatefulSet's volumeClaimTemplate: a claim per replica. */}}
    {{- if not (and $sharded .Values.persistence.enabled) }}
    - name: history
      {{- if .Values.persistence.enabled }}
      persistentVolumeClaim:
        claimName: {{ default (printf "%s-history" (include "lookout.fullname" .)) .Values.persistence.existingClaim }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- end }}
    {{- range .Values.extraSecretMounts }}
    - name: {{ .name }}
      secret:
        secretName: {{ .secretName }}
        {{- with .defaultMode }}
        defaultMode: {{ . }}
        {{- end }}
    {{- end }}
    {{- range .Values.extraConfigmapMounts }}
    - name: {{ .name }}
      configMap:
        name: {{ .configMap }}
        {{- with .defaultMode }}
        defaultMode: {{ . }}
        {{- end }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
