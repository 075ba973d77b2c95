/**
 * What restore-k8s does to each object on its way into a cluster, kind by kind: which objects
 * are never restored, the fields the old cluster owned that are stripped, and, for
 * `existing: update`, the fields the live object owns that are kept. Velero's restore item
 * actions are the reference (service, job, pvc, secret, service account); each rule here says
 * why it exists.
 */

export type KubeObject = {
  apiVersion?: string;
  kind?: string;
  metadata: Record<string, unknown> & {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: { kind?: string; name?: string; controller?: boolean }[];
    managedFields?: { fieldsV1?: Record<string, unknown> }[];
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  type?: string;
  data?: Record<string, string>;
  [k: string]: unknown;
};

/** The label every restored object carries: the backup it came from. */
export const restoredLabel = 'lifeboat.io/restored-from';

export const customResourceDefinitions = 'customresourcedefinitions.apiextensions.k8s.io';

/** Resources never restored (as Velero): they belong to the cluster that ran them. */
const neverRestored = new Set([
  'nodes',
  'events',
  'events.events.k8s.io',
  // Which node mounts what, and the nodes' CSI drivers: the old cluster's machines.
  'csinodes.storage.k8s.io',
  'volumeattachments.storage.k8s.io',
]);

/** The job controller's labels, bound to the old Job's uid (a new Job with them is 422). */
const jobControllerLabels = ['controller-uid', 'batch.kubernetes.io/controller-uid'];

/** Annotations the PV controller uses to track a binding: a restored pair is bound anew. */
const bindingAnnotations = ['pv.kubernetes.io/bind-completed', 'pv.kubernetes.io/bound-by-controller'];
/** A PVC's provisioning state in the old cluster (Velero's pvc action removes them too). */
const provisioningAnnotations = [
  'volume.beta.kubernetes.io/storage-provisioner',
  'volume.kubernetes.io/storage-provisioner',
  'volume.kubernetes.io/selected-node',
];

/** The object's controller (an ownerReference with controller: true), if any. */
export function controllerOf(obj: KubeObject): { kind?: string; name?: string } | undefined {
  return obj.metadata.ownerReferences?.find((o) => o.controller === true);
}

/**
 * Whether a service-account token Secret is one the token controller made (named
 * `<service account>-token-<5 characters>`, as Velero tells them apart): the new cluster makes
 * its own. One a user made under another name is restored, without the old token.
 */
function madeByTokenController(secret: KubeObject): boolean {
  const account = secret.metadata.annotations?.['kubernetes.io/service-account.name'];
  return (
    account !== undefined &&
    new RegExp(`^${escapeRegExp(account)}-token-[a-z0-9]{5}$`).test(secret.metadata.name)
  );
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Why an object is not restored at all, or undefined. */
export function skipReason(resource: string, obj: KubeObject): string | undefined {
  if (neverRestored.has(resource)) return `${resource} are never restored`;
  if (resource.endsWith('.velero.io'))
    return "Velero's own objects are never restored (a restored Backup or Restore would run again)";
  const phase = obj.status?.phase;
  if (resource === 'pods' && (phase === 'Succeeded' || phase === 'Failed'))
    return `a finished pod (${phase})`;
  if (resource === 'pods' && controllerOf(obj)?.kind === 'Job')
    return `made by the Job ${controllerOf(obj)?.name}: the restored Job makes its own`;
  const conditions = (obj.status?.conditions ?? []) as { type?: string; status?: string }[];
  if (
    resource === 'jobs.batch' &&
    conditions.some((c) => (c.type === 'Complete' || c.type === 'Failed') && c.status === 'True')
  )
    return 'a finished job';
  if (
    resource === 'secrets' &&
    obj.type === 'kubernetes.io/service-account-token' &&
    madeByTokenController(obj)
  )
    return 'a service-account token made by the token controller (the cluster makes a new one)';
  if (
    resource === 'endpointslices.discovery.k8s.io' &&
    obj.metadata.labels?.['endpointslice.kubernetes.io/managed-by'] === 'endpointslice-controller.k8s.io'
  )
    return 'made by the EndpointSlice controller for its Service (it makes them anew)';
  return undefined;
}

export interface PrepareOptions {
  /** source namespace → target namespace */
  mapping: Map<string, string>;
  backupId: string;
  /**
   * A Service's node ports: those the user set (`explicit`, the default), `all`, or `none`
   * (verify-restore's copies, which must never take the original's ports).
   */
  nodePorts?: 'explicit' | 'all' | 'none';
}

/**
 * The object as it should be created: server-owned fields stripped (uid, resourceVersion,
 * generation, creationTimestamp, deletion fields, selfLink, managedFields, ownerReferences,
 * status), the per-kind fixes below, the restore label, and `metadata.namespace` the archive
 * path's namespace, mapped (none for a cluster-scoped object), whatever the object says.
 */
export function prepare(
  resource: string,
  source: KubeObject,
  namespace: string | undefined,
  options: PrepareOptions,
): KubeObject {
  const obj = structuredClone(source);
  const meta = obj.metadata;
  const explicitNodePorts = resource === 'services' ? explicitNodePortKeys(source) : undefined;
  for (const field of [
    'uid',
    'resourceVersion',
    'generation',
    'creationTimestamp',
    'deletionTimestamp',
    'deletionGracePeriodSeconds',
    'selfLink',
    'managedFields',
    'ownerReferences',
    'generateName',
  ])
    delete meta[field];
  delete obj.status;
  const mapNs = (ns: string | undefined) => (ns === undefined ? ns : (options.mapping.get(ns) ?? ns));
  if (namespace === undefined) delete meta.namespace;
  else meta.namespace = mapNs(namespace);
  if (resource === 'namespaces') meta.name = mapNs(meta.name)!;
  meta.labels = { ...(meta.labels ?? {}), [restoredLabel]: options.backupId };
  const spec = obj.spec ?? {};
  const dropAnnotations = (names: string[]) => {
    for (const a of names) delete meta.annotations?.[a];
  };
  if (resource === 'services') {
    // A cluster IP belongs to the cluster's service range: the new cluster gives one.
    if (spec.clusterIP !== 'None') {
      delete spec.clusterIP;
      delete spec.clusterIPs;
    }
    // Node ports the API server allocated are given anew; those the user set are kept.
    const nodePorts = options.nodePorts ?? 'explicit';
    const keep = (key: string) =>
      nodePorts === 'all' || (nodePorts === 'explicit' && explicitNodePorts!.has(key));
    for (const port of (spec.ports ?? []) as ServicePort[]) if (!keep(portKey(port))) delete port.nodePort;
    if (!keep('healthCheckNodePort')) delete spec.healthCheckNodePort;
  }
  if (resource === 'pods') delete spec.nodeName;
  if (resource === 'jobs.batch') {
    const selector = spec.selector as { matchLabels?: Record<string, string> } | undefined;
    const template = spec.template as { metadata?: { labels?: Record<string, string> } } | undefined;
    for (const label of jobControllerLabels) {
      delete selector?.matchLabels?.[label];
      delete template?.metadata?.labels?.[label];
    }
  }
  if (resource === 'persistentvolumeclaims')
    dropAnnotations([...bindingAnnotations, ...provisioningAnnotations]);
  if (resource === 'persistentvolumes') {
    // Bound anew to the restored claim: the old claim's uid would make the controller
    // release the volume (and, with reclaim policy Delete, delete the disk).
    const claimRef = spec.claimRef as Record<string, unknown> | undefined;
    if (claimRef) {
      delete claimRef.uid;
      delete claimRef.resourceVersion;
      claimRef.namespace = mapNs(claimRef.namespace as string | undefined);
    }
    dropAnnotations(bindingAnnotations);
  }
  if (resource === 'secrets' && obj.type === 'kubernetes.io/service-account-token') {
    // A user-made token Secret: the token controller fills in the new cluster's token.
    dropAnnotations(['kubernetes.io/service-account.uid']);
    delete obj.data?.token;
    delete obj.data?.['ca.crt'];
  }
  if (resource === 'serviceaccounts') {
    // Token secrets are made anew by the cluster; references to the old ones would dangle.
    delete obj.secrets;
  }
  if (
    resource === 'rolebindings.rbac.authorization.k8s.io' ||
    resource === 'clusterrolebindings.rbac.authorization.k8s.io'
  ) {
    for (const subject of (obj.subjects ?? []) as { namespace?: string }[])
      subject.namespace = mapNs(subject.namespace);
  }
  return obj;
}

type ServicePort = { name?: string; port?: number; protocol?: string; nodePort?: number };

/** A port as managedFields keys it: `k:{"port":80,"protocol":"TCP"}`. */
const portKey = (p: ServicePort) => `k:${JSON.stringify({ port: p.port, protocol: p.protocol ?? 'TCP' })}`;

/**
 * The node ports a user set (and `healthCheckNodePort`): those in kubectl's
 * last-applied-configuration, or owned in managedFields by a manager that is not the API
 * server's own allocation (kube-apiserver records allocated ports under no manager: a
 * manager that lists `f:nodePort` sent it).
 */
function explicitNodePortKeys(service: KubeObject): Set<string> {
  const keys = new Set<string>();
  const ports = (service.spec?.ports ?? []) as ServicePort[];
  const applied = service.metadata.annotations?.['kubectl.kubernetes.io/last-applied-configuration'];
  if (applied) {
    try {
      const spec = (JSON.parse(applied) as { spec?: { ports?: ServicePort[]; healthCheckNodePort?: number } })
        .spec;
      for (const p of spec?.ports ?? []) {
        if (!p.nodePort) continue;
        // Named ports by name, unnamed ones by the node port itself (as Velero matches them).
        const live = ports.find((q) => (p.name ? q.name === p.name : q.nodePort === Number(p.nodePort)));
        if (live) keys.add(portKey(live));
      }
      if (spec?.healthCheckNodePort) keys.add('healthCheckNodePort');
    } catch {}
  }
  for (const entry of service.metadata.managedFields ?? []) {
    const fields = entry.fieldsV1 as { 'f:spec'?: Record<string, unknown> } | undefined;
    const specFields = fields?.['f:spec'];
    if (!specFields) continue;
    for (const [key, value] of Object.entries((specFields['f:ports'] ?? {}) as Record<string, object>))
      if (value && 'f:nodePort' in value) keys.add(key);
    if ('f:healthCheckNodePort' in specFields) keys.add('healthCheckNodePort');
  }
  return keys;
}

/**
 * `existing: update`: the backup's object with what the live one owns and the API server will
 * not let change — its owners and finalizers, a Service's cluster IPs and allocated node ports, a PVC's binding and
 * (immutable) spec but for its size, a PV's claim, a Job's selector and template, a Pod's spec.
 */
export function keepLiveFields(resource: string, desired: KubeObject, live: KubeObject): KubeObject {
  const obj = structuredClone(desired);
  obj.metadata.resourceVersion = live.metadata.resourceVersion;
  // The live cluster's controllers: an adopted ReplicaSet or Pod stays adopted.
  for (const field of ['ownerReferences', 'finalizers'])
    if (live.metadata[field] !== undefined) obj.metadata[field] = live.metadata[field];
  obj.spec ??= {};
  const want = obj.spec;
  const have = live.spec ?? {};
  const copy = (fields: string[]) => {
    for (const f of fields) if (have[f] !== undefined && want[f] === undefined) want[f] = have[f];
  };
  if (resource === 'services') {
    copy(['clusterIP', 'clusterIPs', 'ipFamilies', 'ipFamilyPolicy', 'healthCheckNodePort']);
    const livePorts = (have.ports ?? []) as ServicePort[];
    for (const port of (want.ports ?? []) as ServicePort[]) {
      if (port.nodePort) continue;
      const same = livePorts.find((p) => portKey(p) === portKey(port));
      if (same?.nodePort) port.nodePort = same.nodePort;
    }
  }
  if (resource === 'persistentvolumeclaims')
    obj.spec = { ...have, ...(want.resources ? { resources: want.resources } : {}) };
  if (resource === 'persistentvolumes' && have.claimRef) want.claimRef = have.claimRef;
  if (resource === 'jobs.batch') {
    want.selector = have.selector;
    want.template = have.template;
  }
  if (resource === 'pods') obj.spec = have;
  return obj;
}
