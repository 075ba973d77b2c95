/**
 * The order objects are restored in (Velero's): what others depend on first — definitions,
 * namespaces, storage, identities, configuration — then workloads, then everything else
 * alphabetically. Backups write resources in this order too, so a restore can stream the
 * archive in one pass.
 */
export const restorePriority = [
  'customresourcedefinitions.apiextensions.k8s.io',
  'namespaces',
  'storageclasses.storage.k8s.io',
  'volumesnapshotclasses.snapshot.storage.k8s.io',
  'volumesnapshotcontents.snapshot.storage.k8s.io',
  'volumesnapshots.snapshot.storage.k8s.io',
  'persistentvolumes',
  'persistentvolumeclaims',
  'clusterroles.rbac.authorization.k8s.io',
  'roles.rbac.authorization.k8s.io',
  'serviceaccounts',
  'clusterrolebindings.rbac.authorization.k8s.io',
  'rolebindings.rbac.authorization.k8s.io',
  'secrets',
  'configmaps',
  'limitranges',
  'priorityclasses.scheduling.k8s.io',
  'pods',
  'replicasets.apps',
  'endpoints',
  'services',
];

/** Sorts qualified resource names (`deployments.apps`) into restore order. */
export function compareForRestore(a: string, b: string): number {
  const rank = (name: string) => {
    const i = restorePriority.indexOf(name);
    return i === -1 ? restorePriority.length : i;
  };
  return rank(a) - rank(b) || a.localeCompare(b);
}
