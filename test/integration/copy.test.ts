/**
 * copy between real storages: every pair the harness can start (a folder, s3rver, fauxqs,
 * Azurite, the GCS emulator and Ceph radosgw), each copy restored and compared with the
 * source tree; a copy killed with SIGKILL mid-upload and resumed; damaged source artifacts
 * and manifests; present, conflicting and unfinished backups on the target; a dry run; bad
 * inputs; and the source's credentials kept from the target's service (LIFEBOAT_TO_*).
 * The tests that run the CLI as a child need the bundle (npm run build).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import { Catalog, inProgressName, manifestName } from '../../shared/catalog/catalog.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { runCli as runCliInProcess } from '../../shared/cli/cli.ts';
import { type CopyOptions, chooseSets, copyBackups } from '../../shared/copy/copy.ts';
import { restoreFiles } from '../../shared/files/restore.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import type { Storage } from '../../shared/storage/storage.ts';
import { backupFolder, testManifest } from '../harness/catalog.ts';
import { generated, sha256Of } from '../harness/data.ts';
import { type FaultProxy, startFaultProxy } from '../harness/proxy.ts';
import { baseEnv, repoRoot, runCli } from '../harness/runner.ts';
import {
  cephInstalled,
  startAzurite,
  startCeph,
  startFauxqs,
  startFolder,
  startGcs,
  startS3rver,
  type TestServer,
  tempDir,
} from '../harness/servers.ts';
import { diffTrees, makeHostileTree } from '../harness/tree.ts';

const providers = ['fs', 's3rver', 'fauxqs', 'azurite', 'gcs', ...(cephInstalled ? ['ceph'] : [])];
const starters: Record<string, () => Promise<TestServer>> = {
  fs: startFolder,
  s3rver: startS3rver,
  fauxqs: startFauxqs,
  azurite: startAzurite,
  gcs: startGcs,
  ceph: startCeph,
};
const servers: Record<string, TestServer> = {};
let work: string;
let tree: string;
let origin: Storage;
let manifest: Manifest;

/** A storage under `sub` of a server's fresh bucket (or folder). */
function url(server: TestServer, sub: string): string {
  return server.name === 'fs' ? path.join(server.url, sub) : `${server.url}-${sub}`;
}
const at = (name: string, sub: string) => openStorage(url(servers[name]!, sub), servers[name]!.env);
const folder = (name: string) => openStorage(path.join(work, name));

function copy(source: Storage, target: Storage, options: Partial<CopyOptions> = {}) {
  return chooseSets(source, 'etc').then((sets) =>
    copyBackups({ source, target, sets, backup: 'latest', dryRun: false, logger: silentLogger, ...options }),
  );
}

/** Restores the newest backup of `etc` from `storage` and compares it with the source tree. */
async function restoresIntact(storage: Storage, label: string): Promise<void> {
  const restored = await new Catalog(storage).resolve('etc', 'latest');
  const target = path.join(work, `restored-${label}`);
  await restoreFiles({
    storage,
    manifest: restored,
    target,
    overwrite: false,
    dryRun: false,
    logger: silentLogger,
  });
  assert.deepEqual(await diffTrees(tree, target), []);
  await fs.rm(target, { recursive: true, force: true });
}

/** Every object key under `<set>/` of a storage. */
async function keys(storage: Storage, set = 'etc'): Promise<string[]> {
  const found: string[] = [];
  for await (const item of storage.list(`${set}/`)) found.push(item.key);
  return found.sort();
}

before(async () => {
  work = await tempDir('copy');
  tree = path.join(work, 'tree');
  await makeHostileTree(tree, 256 * 1024);
  origin = folder('origin');
  manifest = await backupFolder({ storage: origin, set: 'etc', source: tree });
  await new Catalog(origin).recordVerification({
    format: 1,
    set: 'etc',
    backupId: manifest.id,
    at: new Date().toISOString(),
    passed: true,
    checks: [{ name: 'restore', passed: true }],
    tool: { name: 'lifeboat', version: '0' },
  });
  const started = await Promise.all(providers.map((p) => starters[p]!()));
  for (const server of started) servers[server.name] = server;
});
after(async () => {
  await Promise.all(Object.values(servers).map((s) => s.stop()));
  await fs.rm(work, { recursive: true, force: true });
});

describe('every pair of storages: copied, verified, committed with the same id, restored', () => {
  before(async () => {
    for (const p of providers) {
      const report = await copy(origin, at(p, 'hub'));
      assert.equal(report.backups[0]!.state, 'copied', `${p}: ${report.backups[0]!.reason}`);
    }
  });
  for (const from of providers) {
    for (const to of providers) {
      if (from === to) continue;
      test(`${from} → ${to}`, async () => {
        const target = at(to, `from-${from}`);
        const report = await copy(at(from, 'hub'), target);
        assert.deepEqual(
          report.backups.map((b) => [b.id, b.state, b.verifications, b.reason]),
          [[manifest.id, 'copied', 1, undefined]],
        );
        const id = manifest.id;
        assert.deepEqual(
          (await keys(target)).map((k) => k.replace(/verifications\/.*/, 'verifications/…')),
          [
            `etc/${id}/files.tar.zst`,
            `etc/${id}/index.jsonl.zst`,
            `etc/${id}/${manifestName}`,
            `etc/${id}/verifications/…`,
          ],
        );
        assert.deepEqual(await new Catalog(target).readManifest('etc', id), manifest);
        await restoresIntact(target, `${from}-${to}`);
      });
    }
  }
});

describe('what the target already holds', () => {
  test('a backup present with the same sha256s is skipped, and nothing on the target changes', async () => {
    const target = folder('present');
    assert.equal((await copy(origin, target)).backups[0]!.state, 'copied');
    const before = await Promise.all(
      (await keys(target)).map(async (k) => [k, (await target.head(k))!.modified]),
    );
    const again = await copy(origin, target);
    assert.deepEqual(
      again.backups.map((b) => [b.state, b.verifications]),
      [['present', 0]],
    );
    assert.equal(again.bytes, 0);
    const now = await Promise.all(
      (await keys(target)).map(async (k) => [k, (await target.head(k))!.modified]),
    );
    assert.deepEqual(now, before);
  });

  test('all-missing copies every committed backup the target lacks, newest first; a damaged manifest is named and the others copied', async () => {
    const source = folder('many');
    const made: Manifest[] = [];
    for (let i = 0; i < 4; i++) made.push(await backupFolder({ storage: source, set: 'etc', source: tree }));
    const target = at('s3rver', 'all-missing');
    assert.equal((await copy(source, target)).backups[0]!.id, made[3]!.id);
    // The second oldest is damaged in the source.
    await fs.writeFile(path.join(work, 'many', 'etc', made[1]!.id, manifestName), '{ not json');
    const report = await copy(source, target, { backup: 'all-missing' });
    assert.deepEqual(
      report.backups.map((b) => [b.id, b.state]),
      [
        [made[3]!.id, 'present'],
        [made[2]!.id, 'copied'],
        [made[1]!.id, 'failed'],
        [made[0]!.id, 'copied'],
      ],
    );
    assert.match(
      report.backups[2]!.reason!,
      new RegExp(`backup etc/${made[1]!.id} in .*manifest.json is not valid JSON`),
    );
    const committed = (await new Catalog(target).listBackups('etc')).filter((b) => b.committed);
    assert.deepEqual(
      committed.map((b) => b.id),
      [made[3]!.id, made[2]!.id, made[0]!.id],
    );
  });

  test('a backup with the same id but other content is an error naming both, and is not overwritten', async () => {
    const target = folder('conflict');
    const theirs = Buffer.from('other bytes');
    const pending = { set: 'etc', id: manifest.id, key: (n: string) => `etc/${manifest.id}/${n}` };
    await target.putBytes(pending.key('files.tar.zst'), theirs);
    const { sha256 } = await sha256Of((await import('node:stream')).Readable.from([theirs]));
    const other = testManifest({
      id: manifest.id,
      set: 'etc',
      artifacts: [{ ...manifest.artifacts[0]!, bytes: theirs.length, sha256 }],
    });
    await new Catalog(target).commit(pending, other);
    const before = await keys(target);
    const report = await copy(origin, target);
    assert.equal(report.backups[0]!.state, 'failed');
    assert.match(
      report.backups[0]!.reason!,
      new RegExp(
        `backup etc/${manifest.id}: .*origin and .*conflict each hold a backup with this id but with other content .*${manifest.artifacts[0]!.sha256}.*${sha256}.*not overwritten`,
      ),
    );
    assert.deepEqual(await keys(target), before);
    assert.deepEqual(await new Catalog(target).readManifest('etc', manifest.id), other);
  });

  test('an unfinished folder with this id that is not a copy (a backup writing it) is left alone', async () => {
    const target = at('azurite', 'foreign-unfinished');
    const marker = `etc/${manifest.id}/${inProgressName}`;
    await target.putBytes(marker, Buffer.from(JSON.stringify({ id: manifest.id, set: 'etc', host: 'x' })));
    const report = await copy(origin, target);
    assert.match(report.backups[0]!.reason!, /holds an unfinished backup with this id that is not a copy/);
    assert.deepEqual(await keys(target), [marker]);
  });

  test('an EBS backup: its manifest is copied, the snapshots stay in EC2 (a warning says so)', async () => {
    const source = folder('ebs');
    const catalog = new Catalog(source);
    const pending = await catalog.begin('vol', 'snapshot', new Date());
    const ebs = testManifest({
      id: pending.id,
      set: 'vol',
      kind: 'ebs',
      mode: 'snapshot',
      artifacts: [],
      facts: { snapshots: [{ snapshotId: 'snap-0123456789abcdef0', volumeId: 'vol-1' }] },
    });
    await catalog.commit(pending, ebs);
    const target = at('fauxqs', 'ebs');
    const warnings: string[] = [];
    const report = await copyBackups({
      source,
      target,
      sets: ['vol'],
      backup: 'latest',
      dryRun: false,
      logger: { info() {}, warn: (m) => warnings.push(m) },
    });
    assert.deepEqual(
      report.backups.map((b) => [b.state, b.bytes]),
      [['copied', 0]],
    );
    assert.deepEqual(await keys(target, 'vol'), [`vol/${pending.id}/${manifestName}`]);
    assert.deepEqual(await new Catalog(target).readManifest('vol', pending.id), ebs);
    assert.match(
      warnings.join('\n'),
      /is an EBS backup: only its manifest is copied; its snapshots stay in EC2/,
    );
  });
});

describe('a damaged source artifact is refused, and nothing of it is left on the target', () => {
  const artifactFile = (storage: string, m: Manifest) =>
    path.join(work, storage, 'etc', m.id, m.artifacts[0]!.name);
  const cases: [string, (b: Buffer) => Buffer, RegExp][] = [
    [
      'a flipped byte',
      (b) => Buffer.concat([b.subarray(0, 100), Buffer.from([b[100]! ^ 1]), b.subarray(101)]),
      /has sha256 [0-9a-f]{64}, its manifest records/,
    ],
    ['truncated', (b) => b.subarray(0, b.length - 10), /has \d+ bytes, its manifest records \d+/],
    [
      'grown',
      (b) => Buffer.concat([b, Buffer.alloc(10)]),
      /has more than the \d+ bytes its manifest records/,
    ],
  ];
  for (const [what, change, message] of cases) {
    for (const to of ['fs', 'azurite', 'gcs', ...(cephInstalled ? ['ceph'] : [])]) {
      test(`${what} → ${to}`, async () => {
        const name = `damaged-${what.replace(/ /g, '-')}-${to}`;
        const source = folder(name);
        const m = await backupFolder({ storage: source, set: 'etc', source: tree });
        const file = artifactFile(name, m);
        await fs.writeFile(file, change(await fs.readFile(file)));
        const target = at(to, name);
        const report = await copy(source, target);
        assert.equal(report.backups[0]!.state, 'failed');
        assert.match(
          report.backups[0]!.reason!,
          new RegExp(`the artifact files\\.tar\\.zst of backup etc/${m.id} in .*${name}`),
        );
        assert.match(report.backups[0]!.reason!, message);
        assert.match(
          report.backups[0]!.reason!,
          /the source artifact is damaged, so this backup is not copied/,
        );
        assert.deepEqual(await keys(target), []);
        if (to === 'ceph') assert.deepEqual(await target.listIncomplete('etc/'), []);
      });
    }
  }
});

test('a dry run prints the plan and writes nothing, not even the target folder', async () => {
  const target = path.join(work, 'dry', 'not-yet');
  const lines: string[] = [];
  const report = await copyBackups({
    source: origin,
    target: openStorage(target),
    sets: ['etc'],
    backup: 'latest',
    dryRun: true,
    logger: { info: (m) => lines.push(m), warn: (m) => lines.push(m) },
  });
  assert.deepEqual(
    report.backups.map((b) => [b.id, b.state, b.bytes]),
    [[manifest.id, 'would-copy', manifest.artifacts.reduce((n, a) => n + a.bytes, 0)]],
  );
  assert.match(lines.join('\n'), new RegExp(`etc/${manifest.id}: would copy .* \\(2 artifact\\(s\\)\\)`));
  await assert.rejects(fs.stat(path.join(work, 'dry')), { code: 'ENOENT' });
});

async function inProcess(args: string[]) {
  let out = '';
  let err = '';
  const code = await runCliInProcess(args, { out: (t) => (out += t), err: (t) => (err += t), env: {} });
  return { code, out, err };
}

test('bad inputs: each one line naming the input, exit 1, nothing written', async () => {
  const source = path.join(work, 'origin');
  const target = path.join(work, 'bad', 'target');
  const cases: [string[], RegExp][] = [
    [['--set', 'etc'], /^to-storage: required/],
    [
      ['--set', 'etc', '--to-storage', 's3://AKIA1234:s3cr3t@bucket/x'],
      /^to-storage: the s3:\/\/ URL has user info or a port \(not shown here/,
    ],
    [['--set', 'etc', '--to-storage', 'ftp://host/x'], /^to-storage: unknown scheme 'ftp:\/\/'/],
    [
      ['--set', 'etc', '--to-storage', source],
      /^to-storage: '.*' is the storage given as storage, or lies inside it or around it/,
    ],
    [
      ['--set', 'etc', '--to-storage', path.join(source, 'inner')],
      /^to-storage: .* lies inside it or around it/,
    ],
    [['--set', 'Not A Set', '--to-storage', target], /^set: 'Not A Set' is not a valid set name/],
    [
      ['--set', 'etc', '--to-storage', target, '--backup', 'yesterday'],
      /^backup: 'yesterday' is not a backup id/,
    ],
    [
      ['--set', '*', '--to-storage', target, '--backup', manifest.id],
      /^backup: '.*' names one backup of one set; with set '\*' give latest or all-missing/,
    ],
    [['--set', 'etc', '--to-storage', target, '--dry-run=maybe'], /^dry-run: /],
    [['--set', 'nosuch', '--to-storage', target], /^set: 'nosuch' is not a set in .*; sets here: etc/],
  ];
  for (const [args, line] of cases) {
    const run = await inProcess(['copy', '--storage', source, ...args]);
    assert.equal(run.code, 1, `${args.join(' ')}: ${run.err}`);
    const lines = run.err.trim().split('\n');
    assert.equal(lines.length, 1, run.err);
    assert.match(lines[0]!.replace(/^error: /, ''), line);
    assert.doesNotMatch(run.err, /s3cr3t/);
  }
  await assert.rejects(fs.stat(path.join(work, 'bad')), { code: 'ENOENT' });
});

/** The built CLI as a child that the test may kill; its output collected. */
function startCli(args: string[], env: Record<string, string>) {
  const child: ChildProcess = spawn(process.execPath, [path.join(repoRoot, 'bin/lifeboat.js'), ...args], {
    env: baseEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = { stdout: '', stderr: '' };
  child.stdout!.setEncoding('utf8').on('data', (d) => (output.stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d) => (output.stderr += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { child, output, exited };
}

async function until(what: string, probe: () => Promise<boolean>, output: { stderr: string }) {
  const deadline = Date.now() + 60_000;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`${what} never happened: ${output.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** An env's variables as the target's: LIFEBOAT_TO_<NAME>. */
const asTarget = (env: Record<string, string>) =>
  Object.fromEntries(Object.entries(env).map(([k, v]) => [`LIFEBOAT_TO_${k}`, v]));

describe('a copy killed with SIGKILL mid-upload leaves nothing committed, and the next run resumes', () => {
  let big: Manifest;
  let bigSource: string;
  before(async () => {
    bigSource = path.join(work, 'big');
    await fs.mkdir(path.join(work, 'big-tree'));
    await pipeline(generated(40 << 20), createWriteStream(path.join(work, 'big-tree', 'data.bin')));
    big = await backupFolder({
      storage: openStorage(bigSource),
      set: 'etc',
      source: path.join(work, 'big-tree'),
      compression: 'none',
    });
  });

  async function killAndResume(
    args: string[],
    env: Record<string, string>,
    target: Storage,
    underWay: () => Promise<boolean>,
    proxy: FaultProxy,
  ) {
    const run = startCli(args, env);
    try {
      await until('the stalled upload', underWay, run.output);
    } finally {
      run.child.kill('SIGKILL');
      await run.exited;
    }
    const [entry] = await new Catalog(target).listBackups('etc');
    assert.equal(entry?.id, big.id);
    assert.equal(entry.committed, false, 'a killed copy looks committed');
    assert.equal(entry.inProgress, true);
    assert.ok(!entry.objects.some((k) => k.endsWith(manifestName)));
    proxy.clear();
    const again = await runCli([...args, '--json'], env);
    assert.equal(again.code, 0, again.stderr);
    const result = JSON.parse(again.stdout).result;
    assert.deepEqual(
      result.backups.map((b: { state: string; replacedUnfinished?: boolean }) => [
        b.state,
        b.replacedUnfinished,
      ]),
      [['copied', true]],
    );
    assert.match(again.stderr, /removing the unfinished folder an earlier copy left/);
    assert.deepEqual(await keys(target), [
      `etc/${big.id}/files.tar`,
      `etc/${big.id}/index.jsonl`,
      `etc/${big.id}/${manifestName}`,
    ]);
    const artifact = big.artifacts[0]!;
    assert.deepEqual(await sha256Of(await target.get(`etc/${big.id}/files.tar`)), {
      sha256: artifact.sha256,
      bytes: artifact.bytes,
    });
    assert.deepEqual(await target.listIncomplete('etc/'), []);
  }

  test('into Ceph radosgw (its part upload stalled): the multipart upload is aborted by the resume', {
    skip: !cephInstalled && 'Ceph is not installed (apt-get install ceph-mon ceph-osd radosgw ceph-common)',
  }, async () => {
    const ceph = servers.ceph!;
    const proxy = await startFaultProxy(ceph.env.AWS_ENDPOINT_URL_S3!);
    try {
      proxy.add({ match: /^PUT .*partNumber=3/, fault: 'stall' });
      const env = asTarget({ ...ceph.env, AWS_ENDPOINT_URL_S3: proxy.endpoint });
      const target = openStorage(url(ceph, 'killed'), ceph.env);
      await killAndResume(
        ['copy', '--storage', bigSource, '--to-storage', url(ceph, 'killed'), '--set', 'etc'],
        env,
        target,
        async () =>
          proxy.requests.some((r) => r.fault === 'stall') &&
          (await target.listIncomplete('etc/')).length === 1,
        proxy,
      );
    } finally {
      await proxy.stop();
    }
  });

  test('into a folder, from s3rver (its download stalled half-way): the temporary file is removed by the resume', async () => {
    const s3 = servers.s3rver!;
    const source = url(s3, 'killed-source');
    assert.equal(
      (await copy(openStorage(bigSource), openStorage(source, s3.env))).backups[0]!.state,
      'copied',
    );
    const proxy = await startFaultProxy(s3.env.AWS_ENDPOINT_URL_S3!);
    try {
      proxy.add({ match: /^GET .*files\.tar/, fault: 'stall-response', afterBytes: 12 << 20 });
      const targetDir = path.join(work, 'killed-target');
      const partials = async () =>
        (await fs.readdir(path.join(targetDir, 'etc', big.id)).catch(() => [] as string[])).filter((n) =>
          n.startsWith('.lifeboat-partial-'),
        );
      await killAndResume(
        ['copy', '--storage', source, '--to-storage', targetDir, '--set', 'etc'],
        { ...s3.env, AWS_ENDPOINT_URL_S3: proxy.endpoint },
        openStorage(targetDir),
        async () => {
          const [partial] = await partials();
          if (!partial) return false;
          const { size } = await fs.stat(path.join(targetDir, 'etc', big.id, partial));
          return size >= 8 << 20;
        },
        proxy,
      );
      assert.deepEqual(await partials(), []);
    } finally {
      await proxy.stop();
    }
  });
});

describe('two S3 services with their own credentials: the source keys never reach the target', () => {
  test('s3rver → Ceph radosgw (which accepts only its own keys) through LIFEBOAT_TO_*, restored from Ceph', {
    skip: !cephInstalled && 'Ceph is not installed',
  }, async () => {
    const s3 = servers.s3rver!;
    const ceph = servers.ceph!;
    const source = url(s3, 'two-accounts');
    assert.equal((await copy(origin, openStorage(source, s3.env))).backups[0]!.state, 'copied');
    const run = await runCli(
      ['copy', '--storage', source, '--to-storage', url(ceph, 'two-accounts'), '--set', 'etc', '--json'],
      { ...s3.env, ...asTarget(ceph.env) },
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal(JSON.parse(run.stdout).copied, `etc/${manifest.id}`);
    assert.notEqual(s3.env.AWS_ACCESS_KEY_ID, ceph.env.AWS_ACCESS_KEY_ID);
    await restoresIntact(openStorage(url(ceph, 'two-accounts'), ceph.env), 'two-accounts');
  });

  test('a target service that records every Authorization header sees only the target keys, or none', async () => {
    const s3 = servers.s3rver!;
    const source = url(s3, 'recorded');
    assert.equal((await copy(origin, openStorage(source, s3.env))).backups[0]!.state, 'copied');
    const seen: string[] = [];
    const recorder = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.authorization ?? '(none)'}`);
      req.resume();
      res.writeHead(403, { 'content-type': 'application/xml' });
      res.end('<Error><Code>InvalidAccessKeyId</Code><Message>unknown key</Message></Error>');
    });
    await new Promise<void>((resolve) => recorder.listen(0, '127.0.0.1', resolve));
    const endpoint = `http://127.0.0.1:${(recorder.address() as { port: number }).port}`;
    const isolated = {
      LIFEBOAT_TO_AWS_ENDPOINT_URL_S3: endpoint,
      LIFEBOAT_TO_AWS_REGION: 'us-east-1',
      LIFEBOAT_TO_AWS_EC2_METADATA_DISABLED: 'true',
      LIFEBOAT_TO_AWS_CONFIG_FILE: '/nonexistent',
      LIFEBOAT_TO_AWS_SHARED_CREDENTIALS_FILE: '/nonexistent',
    };
    const args = ['copy', '--storage', source, '--to-storage', 's3://target-bucket/x', '--set', 'etc'];
    try {
      // No keys of its own: the target has no credentials (the SDK would have taken the source's).
      const bare = await runCli(args, { ...s3.env, ...isolated });
      assert.equal(bare.code, 1, bare.stderr);
      assert.match(
        bare.stderr,
        /error: to-storage: storage s3:\/\/target-bucket\/x: no AWS credentials found.*\(to-storage uses only the LIFEBOAT_TO_\* variables\)/,
      );
      assert.deepEqual(seen, []);
      // Its own keys: those, and never the source's, reach it.
      const keyed = await runCli(args, {
        ...s3.env,
        ...isolated,
        LIFEBOAT_TO_AWS_ACCESS_KEY_ID: 'TARGETKEY',
        LIFEBOAT_TO_AWS_SECRET_ACCESS_KEY: 'TARGETSECRET',
      });
      assert.equal(keyed.code, 1, keyed.stderr);
      assert.match(
        keyed.stderr,
        /error: to-storage: storage s3:\/\/target-bucket\/x: access denied .*\(to-storage uses only the LIFEBOAT_TO_\* variables\)/,
      );
      assert.ok(seen.length > 0);
      for (const line of seen) {
        assert.match(line, /Credential=TARGETKEY\//);
        assert.doesNotMatch(line, new RegExp(s3.env.AWS_ACCESS_KEY_ID!));
      }
    } finally {
      await new Promise((resolve) => recorder.close(resolve));
    }
  });
});

describe('a hostile source (whoever can write it, with matching hashes)', () => {
  /** A copy of the origin's backup folder whose manifest `edit` rewrites. */
  async function crafted(label: string, edit: (m: Record<string, unknown>) => void): Promise<Storage> {
    const root = path.join(work, `hostile-${label}`);
    const from = path.join(work, 'origin', 'etc', manifest.id);
    const into = path.join(root, 'etc', manifest.id);
    await fs.mkdir(path.dirname(into), { recursive: true });
    await fs.cp(from, into, { recursive: true });
    const file = path.join(into, manifestName);
    const json = JSON.parse(await fs.readFile(file, 'utf8')) as Record<string, unknown>;
    edit(json);
    await fs.writeFile(file, JSON.stringify(json));
    return openStorage(root);
  }
  async function everyKey(storage: Storage): Promise<string[]> {
    const found: string[] = [];
    for await (const item of storage.list('')) found.push(item.key);
    return found;
  }

  test('a manifest that names another set or id than its folder is refused; nothing is written', async () => {
    for (const [label, edit] of [
      ['other-set', (m: Record<string, unknown>) => (m.set = 'victim')],
      ['other-id', (m: Record<string, unknown>) => (m.id = '2020-01-01-0000-backup-full')],
    ] as const) {
      const target = folder(`hostile-target-${label}`);
      const report = await copy(await crafted(label, edit), target);
      assert.deepEqual(
        report.backups.map((b) => b.state),
        ['failed'],
        label,
      );
      assert.match(report.backups[0]!.reason ?? '', /manifest/, label);
      assert.deepEqual(await everyKey(target), [], label);
    }
  });

  test('an artifact name that leaves the backup folder is refused; nothing is read or written outside it', async () => {
    const target = folder('hostile-target-path');
    const source = await crafted('path', (m) => {
      const [artifact] = m.artifacts as { name: string }[];
      artifact!.name = `../../victim/${artifact!.name}`;
    });
    const report = await copy(source, target);
    assert.deepEqual(
      report.backups.map((b) => b.state),
      ['failed'],
    );
    assert.match(report.backups[0]!.reason ?? '', /not a plain file name/);
    assert.deepEqual(await everyKey(target), []);
  });
});
