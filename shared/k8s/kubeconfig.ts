/**
 * Kubeconfig as kubectl reads it: the file given, else the files of KUBECONFIG merged (the first
 * to set a value wins), else ~/.kube/config, else in-cluster; the context chosen and checked;
 * and the user's exec plugin set up as client-go runs it (a relative command resolved from its
 * kubeconfig's folder, KUBERNETES_EXEC_INFO).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Cluster, Context, KubeConfig, User } from '@kubernetes/client-node';
import { messageOf, UserError } from '../errors.ts';

/** The current context's cluster and user, and the folder of the kubeconfig file the user came from. */
export interface CurrentContext {
  cluster: Cluster;
  user: User | null;
  /** An exec plugin's relative command is resolved there (none in-cluster). */
  userDir: string | undefined;
}

/**
 * The cluster and user of the context (else the current-context) from a kubeconfig file (the
 * `kubeconfig` input, a single file), else the files of KUBECONFIG merged as kubectl merges
 * them (the first file to set a value wins; missing files are skipped), else ~/.kube/config,
 * or in-cluster when none exists and the pod has a service account.
 */
export async function loadKubeconfig(kubeconfig?: string, context?: string): Promise<CurrentContext> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  const fromEnv = [...new Set((process.env.KUBECONFIG ?? '').split(path.delimiter).filter(Boolean))];
  const files = kubeconfig ? [kubeconfig] : fromEnv.length ? fromEnv : [`${process.env.HOME}/.kube/config`];
  const present = files.filter((file) => fs.existsSync(file));
  /** The folder of the file each user came from: an exec plugin's relative command is resolved there. */
  const userDirs = new Map<string, string>();
  if (present.length) loadMerged(kc, present, userDirs, () => new KubeConfig());
  else if (kubeconfig)
    throw new UserError(`kubeconfig: no kubeconfig at ${kubeconfig}; give the path of a kubeconfig file`);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else
    throw new UserError(
      `kubeconfig: no kubeconfig at ${files.join(', ')}${fromEnv.length ? ' (KUBECONFIG)' : ''} and not running in a cluster; give the kubeconfig input or set KUBECONFIG`,
    );
  if (context) {
    if (!kc.getContextObject(context))
      throw new UserError(
        `context: '${context}' is not in the kubeconfig; it has: ${kc
          .getContexts()
          .map((c) => c.name)
          .join(', ')}`,
      );
    kc.setCurrentContext(context);
  }
  if (!kc.getCurrentContext())
    throw new UserError('kubeconfig: no current-context is set; give the context input');
  if (!kc.getContextObject(kc.getCurrentContext()))
    throw new UserError(`kubeconfig: the current context '${kc.getCurrentContext()}' is not defined`);
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new UserError('kubeconfig: the current context names no cluster');
  let server: URL;
  try {
    server = new URL(cluster.server);
  } catch {
    throw new UserError(`kubeconfig: cluster '${cluster.name}': server is not a URL`);
  }
  if (server.protocol !== 'https:' && server.protocol !== 'http:')
    throw new UserError(`kubeconfig: cluster '${cluster.name}': server must be an https:// or http:// URL`);
  const user = kc.getCurrentUser();
  return { cluster, user, userDir: user ? userDirs.get(user.name) : undefined };
}

/** Reads the files in order and merges them as kubectl does: the first to name a cluster, user or context, or to set current-context, wins. */
function loadMerged(
  kc: KubeConfig,
  files: string[],
  userDirs: Map<string, string>,
  fresh: () => KubeConfig,
): void {
  const clusters = new Map<string, Cluster>();
  const users = new Map<string, User>();
  const contexts = new Map<string, Context>();
  let current: string | undefined;
  for (const file of files) {
    const one = fresh();
    try {
      // A file with nothing in it is an empty config to kubectl, not an error.
      if (!fs.readFileSync(file, 'utf8').replace(/#.*$/gm, '').trim()) continue;
      one.loadFromFile(file);
    } catch (error) {
      const e = error as { name?: string; reason?: string; mark?: { line?: number } };
      // js-yaml's message quotes the file around the fault, and a kubeconfig holds secrets.
      const why =
        e.name === 'YAMLException'
          ? `not valid YAML (${e.reason ?? 'syntax error'}${e.mark?.line !== undefined ? ` at line ${e.mark.line + 1}` : ''})`
          : messageOf(error);
      throw new UserError(`kubeconfig: cannot read ${file}: ${why}`);
    }
    for (const c of one.getClusters()) if (!clusters.has(c.name)) clusters.set(c.name, c);
    for (const u of one.getUsers())
      if (!users.has(u.name)) {
        users.set(u.name, u);
        userDirs.set(u.name, path.dirname(path.resolve(file)));
      }
    for (const c of one.getContexts()) if (!contexts.has(c.name)) contexts.set(c.name, c);
    current ||= one.getCurrentContext() || undefined;
  }
  kc.loadFromOptions({
    clusters: [...clusters.values()],
    users: [...users.values()],
    contexts: [...contexts.values()],
    currentContext: current,
  });
}

/**
 * The user as client-go runs its exec plugin: a relative command with a slash is resolved
 * from the kubeconfig's folder, and KUBERNETES_EXEC_INFO tells the plugin what is asked.
 */
export function execUser(user: User, cluster: Cluster, dir: string | undefined): User {
  const exec = user.exec as
    | {
        command?: string;
        env?: { name: string; value: string }[] | null;
        apiVersion?: string;
        provideClusterInfo?: boolean;
      }
    | undefined
    | null;
  if (!exec) return user;
  let command = exec.command;
  if (command && dir && !path.isAbsolute(command) && command.includes('/')) command = path.join(dir, command);
  let ca = cluster.caData;
  if (!ca && cluster.caFile) {
    try {
      ca = fs.readFileSync(cluster.caFile).toString('base64');
    } catch {}
  }
  const info = {
    apiVersion: exec.apiVersion ?? 'client.authentication.k8s.io/v1beta1',
    kind: 'ExecCredential',
    spec: {
      interactive: false,
      ...(exec.provideClusterInfo
        ? {
            cluster: {
              server: cluster.server,
              ...(cluster.tlsServerName ? { 'tls-server-name': cluster.tlsServerName } : {}),
              ...(ca ? { 'certificate-authority-data': ca } : {}),
              ...(cluster.skipTLSVerify ? { 'insecure-skip-tls-verify': true } : {}),
              ...(cluster.proxyUrl ? { 'proxy-url': cluster.proxyUrl } : {}),
            },
          }
        : {}),
    },
  };
  const env = [...(exec.env ?? []), { name: 'KUBERNETES_EXEC_INFO', value: JSON.stringify(info) }];
  return { ...user, exec: { ...exec, command, env } };
}
