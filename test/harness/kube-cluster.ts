/**
 * A real, throwaway Kubernetes control plane for the tests, on 127.0.0.1 only: etcd (Debian's
 * etcd-server), kube-apiserver and kube-controller-manager (v1.20.2, built from Debian's source
 * package by scripts/kube-binaries.sh). No kubelet, scheduler or nodes: pods stay Pending and
 * Deployments never become ready; everything else (admission, RBAC, validation, namespace
 * deletion, garbage collection, service-account tokens, PV/PVC binding, CRDs) is the real code.
 *
 * Each cluster has its own state folder (PKI, etcd data, logs) and free ports; stop() kills the
 * processes by PID, waits until they are gone and removes the folder. The children also get
 * SIGKILL when the test process dies (setpriv --pdeathsig), so a crashed test leaves no server.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, openSync, readdirSync } from 'node:fs';
import fs from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort, isAlive } from '../../shared/mysql/ephemeral.ts';

const exec = promisify(execFile);

export interface KubeBinaries {
  apiserver: string;
  controllerManager: string;
  etcd: string;
  /** The folder of the two kube binaries. */
  bin: string;
}

export interface KubeCluster {
  /** An admin kubeconfig (token user in system:masters, the cluster's CA). */
  kubeconfig: string;
  /** https://127.0.0.1:<port> */
  server: string;
  /** The admin's bearer token. */
  token: string;
  /** The CA that signed the API server's certificate. */
  caFile: string;
  /** PKI, etcd data and each process's log (logs/<name>.log). */
  stateDir: string;
  pids: Record<string, number>;
  /** Milliseconds from start() to each process being ready (cumulative). */
  timings: Record<string, number>;
  /** Kills the processes (TERM, KILL after 10 s), waits until they are gone, removes stateDir. */
  stop(): Promise<void>;
}

/** The cache folder scripts/kube-binaries.sh builds into. */
export function kubeCache(): string {
  return path.join(process.env.LIFEBOAT_CACHE ?? path.join(os.homedir(), '.cache', 'lifeboat'), 'kube');
}

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':').concat('/usr/bin', '/usr/sbin')) {
    if (dir && executable(path.join(dir, name))) return path.join(dir, name);
  }
  return undefined;
}

const complete = (bin: string) =>
  executable(path.join(bin, 'kube-apiserver')) && executable(path.join(bin, 'kube-controller-manager'));

/**
 * The control plane's binaries: LIFEBOAT_KUBE_BIN when set, else the newest complete build in
 * the cache (scripts/kube-binaries.sh), and etcd from PATH (LIFEBOAT_ETCD overrides). When one
 * is missing, `binaries` is undefined and `reason` says what and how to get it.
 */
export function kubeBinaries():
  | { binaries: KubeBinaries; reason?: undefined }
  | { binaries?: undefined; reason: string } {
  let bin = process.env.LIFEBOAT_KUBE_BIN;
  if (bin) {
    if (!complete(bin))
      return {
        reason: `LIFEBOAT_KUBE_BIN=${bin} holds no executable kube-apiserver and kube-controller-manager`,
      };
  } else {
    const cache = kubeCache();
    let versions: string[] = [];
    try {
      versions = readdirSync(cache).filter((v) => !v.startsWith('.') && complete(path.join(cache, v, 'bin')));
    } catch {}
    const newest = versions.sort((a, b) => a.localeCompare(b, 'en', { numeric: true })).at(-1);
    if (!newest)
      return {
        reason: `no kube-apiserver build in ${cache} (run bash scripts/kube-binaries.sh as root once, ~6 min; or set LIFEBOAT_KUBE_BIN)`,
      };
    bin = path.join(cache, newest, 'bin');
  }
  const etcd = process.env.LIFEBOAT_ETCD ?? onPath('etcd');
  if (!etcd || !executable(etcd)) return { reason: 'etcd is not installed (apt-get install etcd-server)' };
  if (!onPath('openssl')) return { reason: 'openssl is not installed (it makes the cluster PKI)' };
  return {
    binaries: {
      apiserver: path.join(bin, 'kube-apiserver'),
      controllerManager: path.join(bin, 'kube-controller-manager'),
      etcd,
      bin,
    },
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Distinct free ports (the kernel could hand out one twice between two closes). */
async function freePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

/** GET over https; the status code, or 0 when nothing answers. */
function probe(url: string, options: { ca?: Buffer; token?: string; insecure?: boolean }): Promise<number> {
  return new Promise((resolve) => {
    const req = https.get(
      url,
      {
        ca: options.ca,
        rejectUnauthorized: !options.insecure,
        headers: options.token ? { authorization: `Bearer ${options.token}` } : {},
        timeout: 2000,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

async function pki(dir: string): Promise<void> {
  const ssl = (args: string) => exec('openssl', args.split(' '), { cwd: dir });
  await Promise.all([
    ssl('req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=lifeboat-test-ca -keyout ca.key -out ca.crt'),
    ssl('req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout apiserver.key -out apiserver.csr'),
    ssl('genrsa -out sa.key 2048'),
  ]);
  await fs.writeFile(
    path.join(dir, 'apiserver.ext'),
    [
      'basicConstraints=CA:FALSE',
      'keyUsage=digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local',
      '',
    ].join('\n'),
  );
  await Promise.all([
    ssl(
      'x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile apiserver.ext -out apiserver.crt',
    ),
    ssl('rsa -in sa.key -pubout -out sa.pub'),
  ]);
}

function kubeconfigText(server: string, ca: string, user: string, token: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: lifeboat-test',
    '  cluster:',
    `    server: ${server}`,
    `    certificate-authority: ${ca}`,
    'users:',
    `- name: ${user}`,
    '  user:',
    `    token: ${token}`,
    'contexts:',
    '- name: lifeboat-test',
    `  context: {cluster: lifeboat-test, user: ${user}}`,
    'current-context: lifeboat-test',
    '',
  ].join('\n');
}

/** Children still running, for the exit hook (a test that forgets stop() leaves no server). */
const running = new Set<ChildProcess>();
let hooked = false;
function hookExit() {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const child of running)
      if (child.pid)
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {}
  });
}

async function waitFor(
  what: string,
  ready: () => Promise<boolean>,
  children: Map<string, ChildProcess>,
  stateDir: string,
  deadline: number,
): Promise<void> {
  for (;;) {
    if (await ready()) return;
    for (const [name, child] of children)
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(
          `${name} exited (${child.exitCode ?? child.signalCode}) while waiting for ${what}${await logTail(stateDir, name)}`,
        );
    if (Date.now() > deadline)
      throw new Error(`${what} not ready in time${await logTail(stateDir, [...children.keys()].at(-1)!)}`);
    await sleep(100);
  }
}

async function logTail(stateDir: string, name: string): Promise<string> {
  const text = await fs.readFile(path.join(stateDir, 'logs', `${name}.log`), 'utf8').catch(() => '');
  const lines = text.trimEnd().split('\n').slice(-15).join('\n');
  return lines ? `; the end of its log:\n${lines}` : '';
}

async function stopAll(children: Map<string, ChildProcess>): Promise<void> {
  // Reverse start order: controller manager, apiserver, etcd.
  for (const child of [...children.values()].reverse()) {
    const pid = child.pid;
    if (!pid) continue;
    const gone = () => child.exitCode !== null || child.signalCode !== null || !isAlive(pid);
    if (!gone()) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {}
      for (let i = 0; i < 200 && !gone(); i++) await sleep(50);
      if (!gone()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {}
        for (let i = 0; i < 200 && !gone(); i++) await sleep(50);
      }
    }
    if (!gone()) throw new Error(`process ${pid} survived SIGKILL`);
    running.delete(child);
  }
}

export interface KubeClusterOptions {
  binaries?: KubeBinaries;
  /** Seconds to wait for readiness (default 120). */
  waitSeconds?: number;
  apiserverArgs?: string[];
  controllerManagerArgs?: string[];
}

/**
 * Starts etcd, kube-apiserver and kube-controller-manager; resolves once controllers work. A
 * port taken by someone else between choosing and binding it means one more try on new ports.
 */
export async function startKubeCluster(options: KubeClusterOptions = {}): Promise<KubeCluster> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(options);
    } catch (error) {
      if (attempt >= 3 || !/address already in use/.test(String(error))) throw error;
    }
  }
}

async function startOnce(options: KubeClusterOptions): Promise<KubeCluster> {
  const found = options.binaries ? { binaries: options.binaries } : kubeBinaries();
  if (!found.binaries) throw new Error(`no real Kubernetes control plane: ${found.reason}`);
  const bins = found.binaries;
  hookExit();
  const t0 = Date.now();
  const deadline = t0 + (options.waitSeconds ?? 120) * 1000;
  const stateDir = await fs.mkdtemp(path.join(os.tmpdir(), 'lifeboat-kube-'));
  const P = path.join(stateDir, 'pki');
  await fs.mkdir(P);
  await fs.mkdir(path.join(stateDir, 'logs'));
  await fs.mkdir(path.join(stateDir, 'etcd'), { mode: 0o700 });
  const children = new Map<string, ChildProcess>();
  const timings: Record<string, number> = {};
  const setpriv = onPath('setpriv');
  const launch = (name: string, file: string, args: string[]) => {
    const log = openSync(path.join(stateDir, 'logs', `${name}.log`), 'a');
    const [cmd, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', file, ...args]] : [file, args];
    const child = spawn(cmd, argv, { stdio: ['ignore', log, log], cwd: stateDir });
    closeSync(log);
    child.on('error', () => {});
    children.set(name, child);
    running.add(child);
    return child;
  };
  try {
    await pki(P);
    timings.pki = Date.now() - t0;
    const token = randomBytes(24).toString('hex');
    const kcmToken = randomBytes(24).toString('hex');
    await fs.writeFile(
      path.join(P, 'tokens.csv'),
      `${token},admin,admin,system:masters\n${kcmToken},system:kube-controller-manager,system:kube-controller-manager\n`,
      { mode: 0o600 },
    );
    const [etcdClient, etcdPeer, apiPort, kcmPort] = await freePorts(4);
    const server = `https://127.0.0.1:${apiPort}`;
    const ca = path.join(P, 'ca.crt');
    const kubeconfig = path.join(stateDir, 'admin.kubeconfig');
    const kcmKubeconfig = path.join(stateDir, 'kcm.kubeconfig');
    await fs.writeFile(kubeconfig, kubeconfigText(server, ca, 'admin', token), { mode: 0o600 });
    await fs.writeFile(kcmKubeconfig, kubeconfigText(server, ca, 'kube-controller-manager', kcmToken), {
      mode: 0o600,
    });
    const caPem = await fs.readFile(ca);

    const etcdUrl = `http://127.0.0.1:${etcdClient}`;
    launch('etcd', bins.etcd, [
      '--name=lifeboat-test',
      `--data-dir=${path.join(stateDir, 'etcd')}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-cluster=lifeboat-test=http://127.0.0.1:${etcdPeer}`,
      '--quota-backend-bytes=1073741824',
    ]);
    await waitFor(
      'etcd',
      async () =>
        await fetch(`${etcdUrl}/health`)
          .then((r) => r.ok)
          .catch(() => false),
      children,
      stateDir,
      deadline,
    );
    timings.etcd = Date.now() - t0;

    launch('kube-apiserver', bins.apiserver, [
      `--etcd-servers=${etcdUrl}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      `--secure-port=${apiPort}`,
      '--insecure-port=0',
      `--cert-dir=${P}`,
      `--tls-cert-file=${path.join(P, 'apiserver.crt')}`,
      `--tls-private-key-file=${path.join(P, 'apiserver.key')}`,
      `--client-ca-file=${ca}`,
      `--token-auth-file=${path.join(P, 'tokens.csv')}`,
      '--authorization-mode=RBAC',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${path.join(P, 'sa.pub')}`,
      `--service-account-signing-key-file=${path.join(P, 'sa.key')}`,
      '--api-audiences=https://kubernetes.default.svc.cluster.local',
      '--service-cluster-ip-range=10.96.0.0/16',
      '--service-node-port-range=30000-32767',
      '--endpoint-reconciler-type=none',
      '--allow-privileged=true',
      '--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota',
      '--profiling=false',
      ...(options.apiserverArgs ?? []),
    ]);
    await waitFor(
      'kube-apiserver',
      async () => (await probe(`${server}/readyz`, { ca: caPem, token })) === 200,
      children,
      stateDir,
      deadline,
    );
    timings.apiserver = Date.now() - t0;

    launch('kube-controller-manager', bins.controllerManager, [
      `--kubeconfig=${kcmKubeconfig}`,
      `--authentication-kubeconfig=${kcmKubeconfig}`,
      `--authorization-kubeconfig=${kcmKubeconfig}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${kcmPort}`,
      '--port=0',
      `--cert-dir=${P}`,
      '--leader-elect=false',
      '--controllers=*',
      '--use-service-account-credentials=true',
      `--service-account-private-key-file=${path.join(P, 'sa.key')}`,
      `--root-ca-file=${ca}`,
      `--cluster-signing-cert-file=${ca}`,
      `--cluster-signing-key-file=${path.join(P, 'ca.key')}`,
      '--pvclaimbinder-sync-period=2s',
      '--profiling=false',
      ...(options.controllerManagerArgs ?? []),
    ]);
    await waitFor(
      'kube-controller-manager',
      async () => (await probe(`https://127.0.0.1:${kcmPort}/healthz`, { insecure: true })) === 200,
      children,
      stateDir,
      deadline,
    );
    // The controllers really work once the service-account controller made `default` in `default`.
    await waitFor(
      'the controllers (the default service account)',
      async () =>
        (await probe(`${server}/api/v1/namespaces/default/serviceaccounts/default`, { ca: caPem, token })) ===
        200,
      children,
      stateDir,
      deadline,
    );
    timings.controllerManager = Date.now() - t0;

    const pids = Object.fromEntries([...children].map(([name, child]) => [name, child.pid!]));
    let stopped: Promise<void> | undefined;
    return {
      kubeconfig,
      server,
      token,
      caFile: ca,
      stateDir,
      pids,
      timings,
      stop() {
        stopped ??= (async () => {
          await stopAll(children);
          await fs.rm(stateDir, { recursive: true, force: true });
        })();
        return stopped;
      },
    };
  } catch (error) {
    await stopAll(children).catch(() => {});
    await fs.rm(stateDir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * Polls `probe` until it returns a value (not undefined; a throw counts as not yet), up to
 * `ms`; then fails saying `what` and the last error. A real control plane's controllers act
 * asynchronously: bindings, token Secrets, EndpointSlices, garbage collection.
 */
export async function eventually<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  ms = 30_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms${last ? ` (${last})` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
