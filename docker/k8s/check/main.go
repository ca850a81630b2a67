// Command check validates Kubernetes manifests without a cluster, for
// scripts/k8s-check.sh: each document is decoded strictly into the
// Kubernetes API's own Go types (an unknown or misspelt field, a duplicate
// field, a wrong type or an unknown kind is an error, as with kubectl apply
// --validate=strict), then held to the API server's rules for the fields
// these manifests use (names, ports, volumes and mounts, probes, selectors)
// and to each other (the Service selects the Deployment's pods and targets a
// port they name; a configMap volume names a ConfigMap of the same files).
//
// What it cannot check without a cluster: admission (PodSecurity and the
// like), that the claim and the images exist, scheduling, and the pods
// actually starting.
//
//	go run . FILE...
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: check FILE...")
		os.Exit(2)
	}
	failed := false
	for _, name := range os.Args[1:] {
		errs, err := checkFile(name)
		if err != nil {
			errs = append(errs, err)
		}
		for _, e := range errs {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, e)
			failed = true
		}
		if len(errs) == 0 {
			fmt.Printf("%s: valid\n", name)
		}
	}
	if failed {
		os.Exit(1)
	}
}

func newDecoder() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

// manifest is what one file holds.
type manifest struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	configMaps  []*corev1.ConfigMap
}

func checkFile(name string) ([]error, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var m manifest
	dec := newDecoder()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", n, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", n, err)
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			m.deployments = append(m.deployments, o)
		case *corev1.Service:
			m.services = append(m.services, o)
		case *corev1.ConfigMap:
			m.configMaps = append(m.configMaps, o)
		default:
			return nil, fmt.Errorf("document %d: %s is not checked here", n, gvk)
		}
	}
	if len(m.deployments)+len(m.services)+len(m.configMaps) == 0 {
		return nil, errors.New("no object")
	}
	return m.check(), nil
}

func (m manifest) check() []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, c := range m.configMaps {
		errs = append(errs, checkName("ConfigMap", c.ObjectMeta, validation.IsDNS1123Subdomain)...)
		for k := range c.Data {
			for _, msg := range validation.IsConfigMapKey(k) {
				add("ConfigMap %s: key %q: %s", c.Name, k, msg)
			}
		}
	}
	for _, d := range m.deployments {
		errs = append(errs, checkName("Deployment", d.ObjectMeta, validation.IsDNS1123Subdomain)...)
		errs = append(errs, m.checkDeployment(d)...)
	}
	for _, s := range m.services {
		errs = append(errs, checkName("Service", s.ObjectMeta, validation.IsDNS1035Label)...)
		errs = append(errs, m.checkService(s)...)
	}
	return errs
}

func checkName(kind string, meta metav1.ObjectMeta, valid func(string) []string) []error {
	var errs []error
	if meta.Name == "" {
		return []error{fmt.Errorf("%s without metadata.name", kind)}
	}
	for _, msg := range valid(meta.Name) {
		errs = append(errs, fmt.Errorf("%s %q: %s", kind, meta.Name, msg))
	}
	return errs
}

func (m manifest) checkDeployment(d *appsv1.Deployment) []error {
	var errs []error
	add := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("Deployment %s: "+format, append([]any{d.Name}, a...)...))
	}
	if d.Spec.Replicas != nil && *d.Spec.Replicas < 0 {
		add("negative replicas")
	}
	if d.Spec.Selector == nil || len(d.Spec.Selector.MatchLabels)+len(d.Spec.Selector.MatchExpressions) == 0 {
		add("spec.selector is required")
	} else if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil {
		add("spec.selector: %v", err)
	} else if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		add("spec.selector does not match the template's labels")
	}
	pod := d.Spec.Template.Spec
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			add("volume %q: %s", v.Name, msg)
		}
		if _, dup := volumes[v.Name]; dup {
			add("volume %q twice", v.Name)
		}
		volumes[v.Name] = v
		n := 0
		for _, set := range []bool{v.EmptyDir != nil, v.PersistentVolumeClaim != nil, v.ConfigMap != nil,
			v.Secret != nil, v.HostPath != nil, v.Projected != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			add("volume %q: %d sources, want exactly one of those checked here", v.Name, n)
		}
		if c := v.PersistentVolumeClaim; c != nil && c.ClaimName == "" {
			add("volume %q: claimName is required", v.Name)
		}
		if c := v.ConfigMap; c != nil && !m.hasConfigMap(c.Name) {
			add("volume %q: no ConfigMap %q in the manifest", v.Name, c.Name)
		}
	}
	if len(pod.Containers) == 0 {
		add("no containers")
	}
	names := map[string]bool{}
	for _, c := range pod.Containers {
		errs = append(errs, checkContainer(d.Name, c, volumes, m)...)
		if names[c.Name] {
			add("container %q twice", c.Name)
		}
		names[c.Name] = true
	}
	return errs
}

// checkContainer checks one container field by field, in the order the
// Kubernetes API documents them. It is one flat list of independent checks
// (each if adds at most one error), not one decision: split, it would only
// pass errs and add around.
func checkContainer(deployment string, c corev1.Container, volumes map[string]corev1.Volume, m manifest) []error {
	var errs []error
	add := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("Deployment %s: container %q: "+format, append([]any{deployment, c.Name}, a...)...))
	}
	for _, msg := range validation.IsDNS1123Label(c.Name) {
		add("name: %s", msg)
	}
	if c.Image == "" {
		add("image is required")
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		for _, msg := range validation.IsValidPortNum(int(p.ContainerPort)) {
			add("port %q: %s", p.Name, msg)
		}
		if p.Name != "" {
			for _, msg := range validation.IsValidPortName(p.Name) {
				add("port %q: %s", p.Name, msg)
			}
			if _, dup := ports[p.Name]; dup {
				add("port name %q twice", p.Name)
			}
			ports[p.Name] = p.ContainerPort
		}
	}
	paths := map[string]bool{}
	for _, vm := range c.VolumeMounts {
		v, ok := volumes[vm.Name]
		if !ok {
			add("mounts volume %q, which the pod does not have", vm.Name)
		}
		if !strings.HasPrefix(vm.MountPath, "/") {
			add("mountPath %q is not absolute", vm.MountPath)
		}
		if paths[vm.MountPath] {
			add("mountPath %q twice", vm.MountPath)
		}
		paths[vm.MountPath] = true
		if vm.SubPath != "" {
			if strings.HasPrefix(vm.SubPath, "/") || strings.Contains("/"+vm.SubPath+"/", "/../") {
				add("subPath %q must be relative, without ..", vm.SubPath)
			}
			if v.ConfigMap != nil && !m.configMapHas(v.ConfigMap.Name, vm.SubPath) {
				add("subPath %q: ConfigMap %q has no such key", vm.SubPath, v.ConfigMap.Name)
			}
		}
	}
	for what, p := range map[string]*corev1.Probe{"readinessProbe": c.ReadinessProbe,
		"livenessProbe": c.LivenessProbe, "startupProbe": c.StartupProbe} {
		if p == nil {
			continue
		}
		if p.HTTPGet == nil && p.TCPSocket == nil && p.Exec == nil && p.GRPC == nil {
			add("%s: no handler", what)
		}
		if h := p.HTTPGet; h != nil {
			if !strings.HasPrefix(h.Path, "/") {
				add("%s: path %q is not absolute", what, h.Path)
			}
			if h.Port.StrVal != "" {
				if _, ok := ports[h.Port.StrVal]; !ok {
					add("%s: port %q is not one of the container's", what, h.Port.StrVal)
				}
			} else {
				for _, msg := range validation.IsValidPortNum(h.Port.IntValue()) {
					add("%s: port: %s", what, msg)
				}
			}
		}
	}
	if sc := c.SecurityContext; sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot &&
		sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		add("runAsNonRoot with runAsUser 0")
	}
	return errs
}

func (m manifest) checkService(s *corev1.Service) []error {
	var errs []error
	add := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("Service %s: "+format, append([]any{s.Name}, a...)...))
	}
	if len(s.Spec.Ports) == 0 {
		add("no ports")
	}
	// The pods the Service selects, among the manifest's.
	var pods []corev1.PodTemplateSpec
	for _, d := range m.deployments {
		if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
			pods = append(pods, d.Spec.Template)
		}
	}
	if len(pods) == 0 {
		add("selects none of the manifest's pods")
	}
	for _, p := range s.Spec.Ports {
		for _, msg := range validation.IsValidPortNum(int(p.Port)) {
			add("port %d: %s", p.Port, msg)
		}
		if name := p.TargetPort.StrVal; name != "" {
			for _, msg := range validation.IsValidPortName(name) {
				add("targetPort %q: %s", name, msg)
			}
			for _, pod := range pods {
				if !podNamesPort(pod.Spec, name) {
					add("targetPort %q: no container of the selected pods names that port", name)
				}
			}
		}
	}
	return errs
}

func podNamesPort(pod corev1.PodSpec, name string) bool {
	for _, c := range pod.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

func (m manifest) hasConfigMap(name string) bool {
	for _, c := range m.configMaps {
		if c.Name == name {
			return true
		}
	}
	return false
}

func (m manifest) configMapHas(name, key string) bool {
	for _, c := range m.configMaps {
		if _, ok := c.Data[key]; c.Name == name && ok {
			return true
		}
	}
	return false
}

// stripComments drops whole-line comments, so that a document of comments
// alone counts as empty.
func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(append(out, line...), '\n')
		}
	}
	return out
}
