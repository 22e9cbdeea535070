{{/* The chart's name, or nameOverride. */}}
{{- define "kubedf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The objects' name: fullnameOverride, else the release name when it already
holds the chart's name (release "kubedf" gives "kubedf"), else
<release>-<name>.
*/}}
{{- define "kubedf.fullname" -}}
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

{{- define "kubedf.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* What selects the pods: stable across upgrades. */}}
{{- define "kubedf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubedf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kubedf.labels" -}}
{{ include "kubedf.selectorLabels" . }}
helm.sh/chart: {{ include "kubedf.chart" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kubedf.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubedf.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* --volume-stats.kubelet-names, checked against kubeletCompat. */}}
{{- define "kubedf.kubeletNames" -}}
{{- $compat := .Values.prometheus.monitor.kubeletCompat }}
{{- $names := .Values.volumeStats.kubeletNames | default (ternary "uncovered" "all" $compat) }}
{{- if not (has $names (list "all" "uncovered" "none")) }}
{{- fail (printf "volumeStats.kubeletNames must be all, uncovered or none, not %q" $names) }}
{{- end }}
{{- if and $compat (eq $names "all") }}
{{- fail "prometheus.monitor.kubeletCompat relabels kubedf's kubelet_volume_stats_* to job=\"kubelet\": with volumeStats.kubeletNames=all every PVC that kubelet reports too would be seen twice; use uncovered" }}
{{- end }}
{{- $names }}
{{- end }}

{{/* Whether the web config turns TLS on. */}}
{{- define "kubedf.tls" -}}
{{- if (.Values.webConfig | default dict).tls_server_config }}true{{ end }}
{{- end }}

{{- define "kubedf.webConfigPath" -}}
/etc/kubedf/web-config.yml
{{- end }}

{{/*
The CRI socket kubedf is pinned to, as a host path: criSocket given as a path
(/run/k3s/containerd/containerd.sock) or as kubelet's --container-runtime-endpoint URL
(unix:///run/k3s/containerd/containerd.sock). Empty: none, kubedf follows the kubelet's own
endpoint under /host; without the host root mount it cannot see the kubelet, and kubelet's
default socket (containerd's) is pinned. The socket's directory is mounted at the same path and
passed to --cri.endpoint, so only a unix socket at an absolute path will do.
*/}}
{{- define "kubedf.criSocketPath" -}}
{{- $path := trimPrefix "unix://" .Values.criSocket }}
{{- if and (not $path) (not .Values.hostRootFsMount.enabled) }}
{{- $path = "/run/containerd/containerd.sock" }}
{{- end }}
{{- if and $path (not (hasPrefix "/" $path)) }}
{{- fail (printf "criSocket must be an absolute path or a unix:// URL of one, not %q" .Values.criSocket) }}
{{- end }}
{{- $path }}
{{- end }}

{{/* daemonset or cluster; anything else fails the render. */}}
{{- define "kubedf.mode" -}}
{{- $mode := .Values.mode | default "daemonset" }}
{{- if not (has $mode (list "daemonset" "cluster")) }}
{{- fail (printf "mode must be daemonset (one kubedf per node) or cluster (one poller of every kubelet), not %q" (toString .Values.mode)) }}
{{- end }}
{{- $mode }}
{{- end }}

{{/* cluster.shards, checked: a whole number, at least 1. */}}
{{- define "kubedf.shards" -}}
{{- $shards := .Values.cluster.shards }}
{{- $number := or (kindIs "float64" $shards) (kindIs "int" $shards) (kindIs "int64" $shards) }}
{{- if or (not $number) (lt (float64 $shards) 1.0) (ne (float64 (int64 $shards)) (float64 $shards)) }}
{{- fail (printf "cluster.shards must be a whole number of at least 1, not %s" (toJson $shards)) }}
{{- end }}
{{- int64 $shards }}
{{- end }}

{{/*
--metric-allowlist or --metric-denylist, as args lines: each list comma-joined (kubedf splits on
commas, so an expression holding one cannot be passed), and not both.
*/}}
{{- define "kubedf.metricFilterArgs" -}}
{{- if and .Values.metricAllowlist .Values.metricDenylist }}
{{- fail "metricAllowlist and metricDenylist are both set; kubedf refuses both at once (--metric-allowlist and --metric-denylist are mutually exclusive): set only one" }}
{{- end }}
{{- range $flag, $list := dict "metric-allowlist" .Values.metricAllowlist "metric-denylist" .Values.metricDenylist }}
{{- range $list }}
{{- if contains "," (toString .) }}
{{- fail (printf "%s: %q holds a comma, which kubedf's --%s splits on; write it without one" (ternary "metricAllowlist" "metricDenylist" (eq $flag "metric-allowlist")) (toString .) $flag) }}
{{- end }}
{{- end }}
{{- with $list }}
- --{{ $flag }}={{ join "," . }}
{{- end }}
{{- end }}
{{- end }}

{{/* kubelet's serving certificate: --kubelet.ca-file, --kubelet.insecure-skip-tls-verify. */}}
{{- define "kubedf.kubeletTLSArgs" -}}
{{- with .Values.kubelet.caFile }}
- --kubelet.ca-file={{ . }}
{{- end }}
{{- if .Values.kubelet.insecureSkipTLSVerify }}
- --kubelet.insecure-skip-tls-verify
{{- end }}
{{- end }}
