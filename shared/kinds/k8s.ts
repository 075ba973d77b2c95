import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseAutoBoolean, parseBoolean, parseChoice, parseDuration } from '../action/inputs.ts';
import type { CommandResult, InputReader } from '../action/spec.ts';
import type { Manifest } from '../catalog/manifest.ts';
import { messageOf, UserError } from '../errors.ts';
import type { K8sFacts } from '../k8s/backup.ts';
import { KubeClient } from '../k8s/client.ts';
import { type ExistingPolicy, restoreK8s, veleroBackupName } from '../k8s/restore.ts';
import { deleteVeleroFolder, veleroCopyOwner } from '../k8s/velero-layout.ts';
import { deleteNamespaces, type K8sLeftovers, verifyK8s } from '../k8s/verify.ts';
import { splitList } from '../pipeline/encryption.ts';
import { parsePollInterval } from './ebs.ts';
import { defineKind, type PruneContext, type RestoreContext } from './kind.ts';

const existingPolicies: ExistingPolicy[] = ['skip', 'update', 'recreate'];

/** `prod=prod-restore-test, web=web2` into a map of namespaces. */
function parseNamespaceMapping(value: string | undefined): Map<string, string> {
  const map = new Map<string, string>();
  for (const pair of splitList(value)) {
    const m = /^([a-z0-9-]+)=([a-z0-9-]+)$/.exec(pair.trim());
    if (!m) {
      throw new UserError(
        `namespace-mapping: '${pair}' is not accepted; accepted: source=target namespace pairs, e.g. prod=prod-restore-test`,
      );
    }
    map.set(m[1]!, m[2]!);
  }
  return map;
}

const clusterInputs = (what: string) => [
  {
    name: 'kubeconfig',
    description: `the kubeconfig of the cluster to ${what} (default: KUBECONFIG, ~/.kube/config, in-cluster).`,
  },
  { name: 'context', description: 'the kubeconfig context.' },
];
const openCluster = (read: InputReader) =>
  KubeClient.open(read('kubeconfig')?.trim() || undefined, read('context')?.trim() || undefined);
const parseCluster = (read: InputReader) => ({
  kubeconfig: read('kubeconfig')?.trim() || undefined,
  context: read('context')?.trim() || undefined,
});

function parseRestore(read: InputReader, c: { field<T>(f: () => T): T }) {
  return {
    ...parseCluster(read),
    namespaceMapping: c.field(() => parseNamespaceMapping(read('namespace-mapping'))),
    includeNamespaces: splitList(read('include-namespaces')),
    excludeNamespaces: splitList(read('exclude-namespaces')),
    includeResources: splitList(read('include-resources')),
    excludeResources: splitList(read('exclude-resources')),
    existing: c.field(() => parseChoice('existing', read('existing'), existingPolicies, 'skip')),
    includeClusterResources: c.field(() =>
      parseAutoBoolean('include-cluster-resources', read('include-cluster-resources')),
    ),
    preserveNodePorts: c.field(() => parseBoolean('preserve-node-ports', read('preserve-node-ports'), false)),
    recreateCrds: c.field(() => parseBoolean('recreate-crds', read('recreate-crds'), false)),
    restorePvsWithoutSnapshot: c.field(() =>
      parseBoolean('restore-pvs-without-snapshot', read('restore-pvs-without-snapshot'), false),
    ),
    reportFile: read('report-file')?.trim() || undefined,
    veleroFile: c.field(() => {
      const file = read('velero-backup')?.trim();
      if (file && !existsSync(file))
        throw new UserError(
          `velero-backup: '${file}' does not exist; give the path of a Velero backup tarball (<name>.tar.gz)`,
        );
      return file || undefined;
    }),
  };
}
type RestoreOptions = ReturnType<typeof parseRestore>;

/** Restores a Lifeboat k8s backup (`manifest`) or, without one, the Velero tarball of the options. */
async function restore(
  options: RestoreOptions,
  manifest: Manifest | undefined,
  { logger, signal, uri, started, dryRun, storage, keys, progressIntervalMs }: RestoreContext,
): Promise<CommandResult> {
  const { kubeconfig, context, reportFile, ...k8s } = options;
  const client = await KubeClient.open(kubeconfig, context);
  const result = await restoreK8s({
    ...k8s,
    ...(manifest ? { storage, manifest, keys } : {}),
    client,
    dryRun,
    logger,
    signal,
    progressIntervalMs,
  });
  const seconds = (Date.now() - started) / 1000;
  const id = manifest?.id ?? veleroBackupName(options.veleroFile!);
  const set = manifest?.set ?? 'velero';
  const report = path.resolve(
    reportFile ?? path.join(process.env.RUNNER_TEMP || os.tmpdir(), `lifeboat-restore-${set}-${id}.json`),
  );
  await fs.mkdir(path.dirname(report), { recursive: true });
  await fs.writeFile(
    report,
    `${JSON.stringify({ backupId: id, set, server: client.server, dryRun, ...result }, null, 2)}\n`,
  );
  const c = result.counts;
  const line = `${c.created} created, ${c.updated} updated, ${c.recreated} recreated, ${c.skipped} skipped, ${c.failed} failed${c.unvalidated ? `, ${c.unvalidated} not validated (dry run: their namespace or CRD does not exist yet)` : ''}`;
  logger.info(`${dryRun ? 'dry run (nothing stored): ' : ''}${line}; report ${report}`);
  const failures = result.objects.filter((o) => o.outcome === 'failed');
  return {
    outputs: {
      'backup-id': id,
      uri,
      target: client.server,
      bytes: '0',
      'duration-seconds': seconds.toFixed(1),
      result: JSON.stringify({
        backupId: id,
        set,
        kind: 'k8s',
        dryRun,
        counts: c,
        byResource: result.byResource,
      }),
      report,
    },
    summary: {
      heading: `${dryRun ? 'Dry-run restore' : 'Restore'} of ${manifest ? `${set}/${id}` : `the Velero backup ${id}`}`,
      table: [
        ['Resource', 'Restored'],
        ...Object.entries(result.byResource).map(([r, n]) => [r, String(n)]),
        ...failures
          .slice(0, 20)
          .map((f) => [
            `${f.resource} ${f.namespace ? `${f.namespace}/` : ''}${f.name}`,
            `FAILED: ${f.reason}`,
          ]),
      ],
      notes: [`Into ${client.server}: ${line}; ${seconds.toFixed(1)} s. A result per object: ${report}.`],
    },
    failed: failures.length
      ? [
          `restore: ${failures.length} object(s) failed (first: ${failures[0]!.resource} ${failures[0]!.name}: ${failures[0]!.reason}); see ${report}`,
        ]
      : undefined,
  };
}

/** Where a k8s backup written with velero-storage has its Velero copy: a storage URL and the copy's name. */
function veleroCopyOf(manifest: Manifest): { storage: string; name: string } | undefined {
  const copy = (manifest.facts as unknown as K8sFacts).velero;
  return typeof copy?.storage === 'string' && typeof copy.name === 'string'
    ? { storage: copy.storage, name: copy.name }
    : undefined;
}

/**
 * Deletes the Velero copies of deleted k8s backups: every object under `backups/<name>/` of
 * the copy's storage, once its velero-backup.json shows it is the copy Lifeboat wrote for that
 * backup (the manifest names the storage, and whoever can write the catalog writes manifests:
 * nothing else is deleted on its word). A copy already gone, or one that cannot be deleted, is
 * a warning: the backup itself is gone by then.
 */
async function deleteVeleroCopies(
  copies: { id: string; ref: { storage: string; name: string } }[],
  { set, logger, openStorage }: PruneContext,
) {
  const result = { deleted: [] as string[], missing: [] as string[], left: [] as string[] };
  for (const { id, ref: copy } of copies) {
    const where = `${copy.storage} backups/${copy.name}/`;
    try {
      const storage = openStorage(copy.storage);
      const owner = await veleroCopyOwner(storage, copy.name, set, id);
      if (owner === 'missing') {
        logger.warn(
          `${set}/${id}: its Velero copy ${where} is gone already (Velero's garbage collection, or a person, deleted it)`,
        );
        result.missing.push(where);
      } else if (owner === 'foreign') {
        logger.warn(
          `${set}/${id}: ${where} is not the Velero copy Lifeboat wrote for this backup (its velero-backup.json does not name it): left in place`,
        );
        result.left.push(where);
      } else {
        await deleteVeleroFolder(storage, copy.name);
        result.deleted.push(where);
      }
    } catch (error) {
      logger.warn(
        `${set}/${id}: its Velero copy ${where} could not be deleted (${messageOf(error)}); delete that folder by hand (or let Velero's garbage collection take it when it expires)`,
      );
      result.left.push(where);
    }
  }
  if (result.deleted.length) logger.info(`${set}: deleted ${result.deleted.length} Velero copy(ies)`);
  return result;
}

/**
 * What the anomaly gates compare of a Kubernetes backup: objects in all and per resource
 * ('objects:deployments.apps').
 */
export function k8sMetrics(manifest: Manifest): Record<string, number> {
  const counts = (manifest.facts as Partial<K8sFacts>).counts;
  const byResource =
    typeof counts?.byResource === 'object' && counts.byResource !== null ? counts.byResource : {};
  const metrics: Record<string, unknown> = { objects: counts?.total };
  for (const [resource, n] of Object.entries(byResource)) metrics[`objects:${resource}`] = n;
  return metrics as Record<string, number>;
}

export const k8sKind = defineKind({
  name: 'k8s',
  metrics: k8sMetrics,
  restore: {
    inputs: [
      ...clusterInputs('restore into'),
      {
        name: 'namespace-mapping',
        description: 'restore namespaces under other names, e.g. prod=prod-restore-test (comma separated).',
      },
      {
        name: 'include-namespaces',
        description: 'namespaces to restore, globs (default: all in the backup).',
      },
      { name: 'exclude-namespaces', description: 'namespaces not to restore, globs.' },
      {
        name: 'include-resources',
        description: 'resource types to restore, e.g. deployments.apps (default: all).',
      },
      { name: 'exclude-resources', description: 'resource types not to restore.' },
      {
        name: 'existing',
        description:
          "when an object exists: skip, update (replace it with the backup's) or recreate (delete, then create).",
        default: 'skip',
      },
      {
        name: 'include-cluster-resources',
        description:
          'cluster-scoped objects. auto: all when no namespace filter is given, else only the CRDs and PVs the restored objects need; true: all; false: none.',
        default: 'auto',
      },
      {
        name: 'preserve-node-ports',
        description:
          'keep every node port of a Service (by default only those set explicitly are kept; the others are allocated anew).',
        default: 'false',
      },
      {
        name: 'recreate-crds',
        description:
          'with existing: recreate, also delete and re-create existing CRDs (which deletes every object of them in the whole cluster).',
        default: 'false',
      },
      {
        name: 'restore-pvs-without-snapshot',
        description:
          'restore PVs with reclaim policy Delete that have no snapshot (by default their PVCs get new volumes, so that the cluster never deletes the disk they name).',
        default: 'false',
      },
      {
        name: 'report-file',
        description: 'where to write the JSON report with a result per object (default: in RUNNER_TEMP).',
      },
      {
        name: 'velero-backup',
        description:
          "restore a backup written by Velero instead: the path of its tarball (<name>.tar.gz, from the bucket's backups/<name>/ folder), with the k8s inputs above.",
      },
    ],
    outputs: [{ name: 'report', description: 'the path of the JSON report with a result per object.' }],
    parse: parseRestore,
    run: restore,
    outside: {
      input: 'velero-backup',
      runOutside(options, context) {
        const file = options.veleroFile!;
        context.logger.info(
          `${context.dryRun ? 'dry run: checking' : 'restoring'} the Velero backup ${file}`,
        );
        return restore(options, undefined, { ...context, uri: `file://${path.resolve(file)}` });
      },
    },
  },
  verify: {
    checks: 'throwaway namespaces',
    inputs: [
      ...clusterInputs('verify in'),
      {
        name: 'wait-ready',
        description:
          'wait this long for restored Deployments and StatefulSets to become ready, e.g. 5m (a check per workload); default: do not wait.',
      },
      {
        name: 'poll-interval',
        description: 'how often to ask the cluster whether the restored workloads are ready.',
        default: '5s',
      },
    ],
    parse: (read, c) => ({
      ...parseCluster(read),
      readyTimeoutMs: c.field(() =>
        read('wait-ready')?.trim() ? parseDuration('wait-ready', read('wait-ready')) * 1000 : 0,
      ),
      pollIntervalMs: c.field(() => parsePollInterval(read)),
    }),
    async run({ kubeconfig, context, ...options }, manifest, { logger, signal, leftovers, uri, ...common }) {
      logger.info(`verifying ${uri} (k8s, taken ${manifest.startedAt}): restored into throwaway namespaces`);
      return verifyK8s({
        ...common,
        ...options,
        manifest,
        client: await KubeClient.open(kubeconfig, context),
        onLeftovers: (state) => leftovers?.(state),
        logger,
        signal,
      });
    },
    leftovers: {
      types: ['namespaces'],
      async remove(state, read, logger) {
        const client = await openCluster(read);
        const left = await deleteNamespaces(client, (state as K8sLeftovers).namespaces, logger);
        logger.info(`deleted the throwaway namespaces${left.length ? ` but ${left.join(', ')}` : ''}`);
      },
    },
  },
  prune: {
    // velero-storage: the Velero copy (`<storage> backups/<name>/`) goes with the backup.
    outside: { report: 'veleroCopies', of: veleroCopyOf, remove: deleteVeleroCopies },
  },
});
