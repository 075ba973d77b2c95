/**
 * A Velero copy of a Kubernetes backup: the backup written the way a Velero server stores one
 * in a BackupStorageLocation, so that Velero's backup sync finds it and `velero restore` can
 * restore it. Under the location's prefix, and nothing else:
 *
 *   backups/<name>/<name>.tar.gz                 the archive (gzip; entries mode 0755, as Velero
 *                                                writes them, so its non-root server can unpack)
 *   backups/<name>/<name>-resource-list.json.gz  {"<group>/<version>/<Kind>": ["ns/name", …]}
 *   backups/<name>/velero-backup.json            the velero.io/v1 Backup, phase Completed: last
 *
 * Velero lists `backups/<name>/` folders and syncs one only once its velero-backup.json
 * exists, so that file is the copy's commit point. Nothing is staged: the archive streams
 * through gzip into the storage while the objects are read.
 */
import { createHash } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip, gzipSync } from 'node:zlib';
import * as tar from 'tar-stream';
import { UserError } from '../errors.ts';
import { Coalescer, chunkBytes } from '../pipeline/buffers.ts';
import { Digest } from '../pipeline/digest.ts';
import type { Logger } from '../pipeline/progress.ts';
import { isNotFound, type Storage, StorageError } from '../storage/storage.ts';
import type { K8sFilters } from './backup.ts';
import type { ApiResource } from './discovery.ts';
import { qualifiedName } from './discovery.ts';

/** Velero's backup format (Velero's pkg/backup BackupFormatVersion), in metadata/version. */
export const veleroFormatVersion = '1.1.0';

/** The folders Velero accepts at a location's root (anything else makes the location Unavailable). */
export const veleroRootFolders = ['backups', 'restores', 'restic', 'metadata', 'plugins', 'kopia'];

/** Velero's default backup TTL: 30 days. */
export const veleroDefaultTtl = '720h';

/** What the manifest records of a Velero copy. */
export interface VeleroCopyFacts {
  /** The storage URL of the BackupStorageLocation's bucket and prefix (no credentials). */
  storage: string;
  /** The Velero backup's name: its folder `backups/<name>/`. */
  name: string;
  /** The BackupStorageLocation the Backup names (a syncing server writes its own). */
  storageLocation: string;
  /** The archive as stored: bytes and sha256. */
  bytes: number;
  sha256: string;
  /** When Velero's garbage collection deletes the copy (the Backup's status.expiration). */
  expiration: string;
}

/** What the Backup object says besides its items: the filters and the cluster, as Lifeboat had them. */
export interface VeleroBackupDetails extends K8sFilters {
  set: string;
  id: string;
  started: Date;
  completed: Date;
  cluster: { gitVersion: string; major?: string; minor?: string };
}

const dnsLabel = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Whether `name` is a name this module makes: a DNS-1123 label (so also a valid label value). */
export function isVeleroName(name: string): boolean {
  return dnsLabel.test(name);
}

/**
 * The Velero backup's name for a Lifeboat backup: `<set>-<id>` as a DNS-1123 label (lowercase
 * letters, digits and '-', at most 63: Velero puts it in label values). A longer one keeps
 * its first 56 characters and ends with 6 hex digits of the sha256 of the whole, so that
 * different backups keep different names.
 */
export function veleroNameFor(set: string, id: string): string {
  const full = `${set}-${id}`
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/-{2,}/g, '-')
    .replace(/^-+|-+$/g, '');
  if (full.length <= 63) return full;
  const hash = createHash('sha256').update(`${set}/${id}`).digest('hex').slice(0, 6);
  return `${full.slice(0, 56).replace(/-+$/, '')}-${hash}`;
}

/** Where the files of backup `name` live, relative to the location's prefix. */
export function veleroKeys(name: string) {
  const dir = `backups/${name}/`;
  return {
    dir,
    archive: `${dir}${name}.tar.gz`,
    resourceList: `${dir}${name}-resource-list.json.gz`,
    metadata: `${dir}velero-backup.json`,
  };
}

type Requirement = { key: string; operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'; values?: string[] };
export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: Requirement[];
}

/**
 * A label selector string (`app=web,tier!=cache,env in (a,b),!legacy`) as the structured
 * selector a Backup's spec holds; undefined when a term has no structured form (`x>1`).
 */
export function structuredSelector(selector: string): LabelSelector | undefined {
  const terms: string[] = [];
  let depth = 0;
  let term = '';
  for (const char of selector) {
    if (char === '(') depth++;
    if (char === ')') depth--;
    if (char === ',' && depth === 0) {
      terms.push(term);
      term = '';
    } else term += char;
  }
  terms.push(term);
  const matchLabels: Record<string, string> = {};
  const matchExpressions: Requirement[] = [];
  const key = '([A-Za-z0-9._/-]+)';
  const value = '([A-Za-z0-9._-]*)';
  const forms: [RegExp, (m: RegExpExecArray) => void][] = [
    [
      new RegExp(`^${key}\\s+(in|notin)\\s*\\(([^)]*)\\)$`),
      (m) => {
        const values = m[3]!
          .split(',')
          .map((v) => v.trim())
          .filter(Boolean);
        matchExpressions.push({ key: m[1]!, operator: m[2] === 'in' ? 'In' : 'NotIn', values });
      },
    ],
    [
      new RegExp(`^${key}\\s*!=\\s*${value}$`),
      (m) => matchExpressions.push({ key: m[1]!, operator: 'NotIn', values: [m[2]!] }),
    ],
    [
      new RegExp(`^${key}\\s*==?\\s*${value}$`),
      (m) => {
        if (m[1]! in matchLabels && matchLabels[m[1]!] !== m[2])
          matchExpressions.push({ key: m[1]!, operator: 'In', values: [m[2]!] });
        else matchLabels[m[1]!] = m[2]!;
      },
    ],
    [new RegExp(`^!\\s*${key}$`), (m) => matchExpressions.push({ key: m[1]!, operator: 'DoesNotExist' })],
    [new RegExp(`^${key}$`), (m) => matchExpressions.push({ key: m[1]!, operator: 'Exists' })],
  ];
  for (const raw of terms) {
    const t = raw.trim();
    if (!t) continue;
    const form = forms.find(([pattern]) => pattern.test(t));
    if (!form) return undefined;
    form[1](form[0].exec(t)!);
  }
  return {
    ...(Object.keys(matchLabels).length ? { matchLabels } : {}),
    ...(matchExpressions.length ? { matchExpressions } : {}),
  };
}

/** Seconds as a Go duration (metav1.Duration's JSON form): 2592000 → 720h0m0s. */
export function goDuration(seconds: number): string {
  const whole = Math.round(seconds);
  return `${Math.floor(whole / 3600)}h${Math.floor((whole % 3600) / 60)}m${whole % 60}s`;
}

/** A time as Kubernetes writes one (metav1.Time): RFC 3339 in UTC, whole seconds. */
const kubeTime = (date: Date) => date.toISOString().replace(/\.\d+Z$/, 'Z');

export interface VeleroCopyOptions {
  storage: Storage;
  set: string;
  id: string;
  /** The BackupStorageLocation's name in the Backup (default `default`). */
  storageLocation: string;
  /** How long until Velero's garbage collection deletes the copy. */
  ttlSeconds: number;
  /** The entries' modification time: when the backup started. */
  started: Date;
  logger: Logger;
  signal?: AbortSignal;
}

/**
 * One Velero copy being written. `prepare` checks the location; then `start`, the entries
 * (`addVersion`, `addObject` for each object, in the order of the Lifeboat archive), `end`,
 * `stored`, and `commit`, which writes the resource list and then the Backup. On any
 * failure: `abort` stops the upload, `discard` deletes whatever was written.
 */
export class VeleroCopy {
  readonly storage: Storage;
  readonly name: string;
  private readonly options: VeleroCopyOptions;
  private readonly pack = tar.pack();
  private readonly digest = new Digest();
  private uploading?: Promise<void>;
  /** `<group>/<version>/<Kind>` → `ns/name` or `name`: the resource list. */
  private readonly items = new Map<string, string[]>();
  private total = 0;

  private constructor(options: VeleroCopyOptions) {
    this.options = options;
    this.storage = options.storage;
    this.name = veleroNameFor(options.set, options.id);
    // Its failure reaches the backup through the entries' callbacks and the upload.
    this.pack.on('error', () => {});
  }

  get keys() {
    return veleroKeys(this.name);
  }

  /**
   * Checks that the location can be written and holds no backup of this name yet, and warns
   * when its root holds folders Velero does not accept (Velero then marks it Unavailable and
   * syncs nothing from it).
   */
  static async prepare(options: VeleroCopyOptions): Promise<VeleroCopy> {
    const copy = new VeleroCopy(options);
    const { storage, logger } = options;
    await storage.check();
    const foreign = (await storage.listDirs(''))
      .map((d) => d.replace(/\/$/, ''))
      .filter((d) => !veleroRootFolders.includes(d));
    if (foreign.length) {
      logger.warn(
        `velero-storage ${storage.url}: its root holds ${foreign.map((d) => `${d}/`).join(', ')}, which Velero does not accept at a backup storage location's root (only ${veleroRootFolders.map((d) => `${d}/`).join(', ')}): Velero will report the location Unavailable and sync no backup from it until they are moved`,
      );
    }
    for await (const item of storage.list(copy.keys.dir)) {
      throw new UserError(
        `velero-storage ${storage.url}: ${item.key} already exists: a Velero backup named ${copy.name} is there; it is not overwritten`,
      );
    }
    return copy;
  }

  /** Starts the upload of the archive: entries → gzip → the storage's streaming put. */
  start(): void {
    const upload = new PassThrough({ highWaterMark: chunkBytes });
    const flowing = pipeline(
      this.pack,
      new Coalescer(),
      createGzip({ chunkSize: chunkBytes }),
      this.digest,
      upload,
      {
        signal: this.options.signal,
      },
    );
    const putting = this.storage.putStream(this.keys.archive, upload, this.options.signal);
    putting.catch((error) => upload.destroy(error));
    flowing.catch((error) => this.pack.destroy(error));
    this.uploading = Promise.all([flowing, putting]).then(() => {});
    this.uploading.catch(() => {});
  }

  private entry(name: string, text: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      try {
        this.pack.entry({ name, mode: 0o755, mtime: this.options.started }, text, (error) =>
          error ? reject(error) : resolve(),
        );
      } catch (error) {
        reject(error);
      }
    });
  }

  /** `metadata/version`: the first entry. */
  addVersion(): Promise<void> {
    return this.entry('metadata/version', `${veleroFormatVersion}\n`);
  }

  /**
   * An object, as Velero's format 1.1.0 files one of its resource's preferred version: under
   * `resources/<resource>.<group>/(namespaces/<ns>|cluster)/<name>.json` and again under
   * `resources/<resource>.<group>/<version>-preferredversion/…` (Lifeboat backs up each
   * resource at its group's preferred version).
   */
  async addObject(r: ApiResource, namespace: string | undefined, name: string, text: string): Promise<void> {
    const scope = r.namespaced ? `namespaces/${namespace}` : 'cluster';
    const folder = `resources/${qualifiedName(r)}`;
    await this.entry(`${folder}/${scope}/${name}.json`, text);
    await this.entry(`${folder}/${r.version}-preferredversion/${scope}/${name}.json`, text);
    const type = `${r.group ? `${r.group}/${r.version}` : r.version}/${r.kind}`;
    const list = this.items.get(type) ?? [];
    list.push(r.namespaced ? `${namespace}/${name}` : name);
    this.items.set(type, list);
    this.total++;
  }

  /** Ends the archive: no entry comes after. */
  end(): void {
    this.pack.finalize();
  }

  /** Waits until the archive is stored (after `end`); its bytes and sha256 as stored. */
  async stored(): Promise<{ bytes: number; sha256: string }> {
    await this.uploading;
    return { bytes: this.digest.bytes, sha256: this.digest.sha256 };
  }

  /** The resource list as Velero writes it: types in byte order, each one's names sorted. */
  resourceList(): Record<string, string[]> {
    const byteOrder = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
    return Object.fromEntries(
      [...this.items.keys()]
        .sort(byteOrder)
        .map((type) => [type, [...this.items.get(type)!].sort(byteOrder)]),
    );
  }

  /** The velero.io/v1 Backup of this copy, phase Completed. */
  backupObject(details: VeleroBackupDetails): Record<string, unknown> {
    const { cluster } = details;
    const version = /^v?(\d+)\.(\d+)/.exec(cluster.gitVersion);
    const list = (values: string[]) => (values.length ? values : undefined);
    const selector = details.labelSelector ? structuredSelector(details.labelSelector) : undefined;
    const expiration = new Date(details.started.getTime() + this.options.ttlSeconds * 1000);
    return {
      apiVersion: 'velero.io/v1',
      kind: 'Backup',
      metadata: {
        name: this.name,
        namespace: 'velero',
        labels: { 'velero.io/storage-location': this.options.storageLocation },
        annotations: {
          'velero.io/source-cluster-k8s-gitversion': cluster.gitVersion,
          'velero.io/source-cluster-k8s-major-version': cluster.major ?? version?.[1] ?? '',
          'velero.io/source-cluster-k8s-minor-version': cluster.minor ?? version?.[2] ?? '',
          'lifeboat.io/set': details.set,
          'lifeboat.io/backup-id': details.id,
        },
      },
      spec: {
        includedNamespaces: list(details.includeNamespaces),
        excludedNamespaces: list(details.excludeNamespaces),
        includedResources: list(details.includeResources),
        excludedResources: list(details.excludeResources),
        labelSelector: selector,
        includeClusterResources:
          details.includeClusterResources === 'auto' ? undefined : details.includeClusterResources,
        snapshotVolumes: false,
        defaultVolumesToFsBackup: false,
        ttl: goDuration(this.options.ttlSeconds),
        storageLocation: this.options.storageLocation,
      },
      status: {
        version: 1,
        formatVersion: veleroFormatVersion,
        phase: 'Completed',
        expiration: kubeTime(expiration),
        startTimestamp: kubeTime(details.started),
        completionTimestamp: kubeTime(details.completed),
        progress: { totalItems: this.total, itemsBackedUp: this.total },
        warnings: 0,
        errors: 0,
      },
    };
  }

  /**
   * Completes the copy once the archive is stored: the resource list, then the Backup (never
   * over an existing one) — the moment Velero can see it.
   */
  async commit(
    details: VeleroBackupDetails,
    archive: { bytes: number; sha256: string },
  ): Promise<VeleroCopyFacts> {
    this.options.signal?.throwIfAborted();
    await this.storage.putBytes(this.keys.resourceList, gzipSync(`${JSON.stringify(this.resourceList())}\n`));
    const backup = this.backupObject(details);
    this.options.signal?.throwIfAborted();
    await this.storage.putBytes(this.keys.metadata, Buffer.from(`${JSON.stringify(backup, null, 2)}\n`), {
      ifAbsent: true,
    });
    return {
      storage: this.storage.url,
      name: this.name,
      storageLocation: this.options.storageLocation,
      bytes: archive.bytes,
      sha256: archive.sha256,
      expiration: (backup.status as { expiration: string }).expiration,
    };
  }

  /** Stops the upload of the archive (it is aborted, not stored). */
  abort(error: unknown): void {
    this.pack.destroy(error instanceof Error ? error : new Error(String(error)));
  }

  /** After a failure: waits for the upload to stop, then deletes whatever of the copy was written. */
  async discard(): Promise<void> {
    this.abort(new Error('the backup failed'));
    await this.uploading?.catch(() => {});
    await deleteVeleroFolder(this.storage, this.name);
  }
}

/**
 * Deletes every object under `backups/<name>/` (the Backup first, so that Velero stops seeing
 * it at once); the copy's known keys are always named too, so a folder storage removes the
 * folders left empty. Returns how many objects there were.
 */
export async function deleteVeleroFolder(storage: Storage, name: string): Promise<number> {
  if (!isVeleroName(name)) throw new Error(`'${name}' is not a Velero backup name Lifeboat makes`);
  const keys = veleroKeys(name);
  const found: string[] = [];
  for await (const item of storage.list(keys.dir)) found.push(item.key);
  if (found.length === 0) {
    // Nothing to delete; on a folder storage this removes the folders an upload left empty.
    await storage.delete([keys.metadata, keys.archive, keys.resourceList]).catch(() => {});
    return 0;
  }
  await storage.delete([keys.metadata]);
  const rest = [...new Set([...found, keys.archive, keys.resourceList])].filter((k) => k !== keys.metadata);
  await storage.delete(rest);
  return found.length;
}

/**
 * Whether the Velero copy `name` in `storage` is the one Lifeboat wrote for `set`/`id`: its
 * velero-backup.json names them. `missing` when there is none (deleted already, or Velero's
 * garbage collection took it).
 */
export async function veleroCopyOwner(
  storage: Storage,
  name: string,
  set: string,
  id: string,
): Promise<'ours' | 'missing' | 'foreign'> {
  if (!isVeleroName(name)) return 'foreign';
  let text: string;
  try {
    const body = await storage.get(veleroKeys(name).metadata);
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk as Buffer);
    text = Buffer.concat(chunks).toString('utf8');
  } catch (error) {
    if (isNotFound(error) || (error instanceof StorageError && error.code === 'no-bucket')) return 'missing';
    throw error;
  }
  try {
    const annotations = (JSON.parse(text) as { metadata?: { annotations?: Record<string, string> } })
      ?.metadata?.annotations;
    return annotations?.['lifeboat.io/set'] === set && annotations?.['lifeboat.io/backup-id'] === id
      ? 'ours'
      : 'foreign';
  } catch {
    return 'foreign';
  }
}
