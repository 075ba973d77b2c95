/**
 * verify-restore of files backups on real folders: the passing drill (every file's size and
 * sha256 against the index made at backup time, check commands with RESTORED_DIR, RTO/RPO, the
 * catalog record), and every way a backup can fail to be proven — damaged, truncated,
 * wrong-key, an edited manifest, a hostile index — each named as its check, with the
 * throwaway folder removed.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import zlib from 'node:zlib';
import { generateIdentity } from 'age-encryption';
import { Catalog } from '../../shared/catalog/catalog.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { backupFiles } from '../../shared/files/backup.ts';
import { recipientOf } from '../../shared/pipeline/encryption.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import type { Storage } from '../../shared/storage/storage.ts';
import { tempDir } from '../harness/servers.ts';
import { makeHostileTree } from '../harness/tree.ts';
import { checkRow, runVerify, type Verified } from '../harness/verify-run.ts';

let work: string;
let source: string;
let storage: Storage;
let identity: string;

async function backup(set: string, options: { encrypted?: boolean; compression?: 'zstd' | 'none' } = {}) {
  return backupFiles({
    storage,
    set,
    source,
    include: [],
    exclude: [],
    compression: options.compression ?? 'zstd',
    encryption: options.encrypted === false ? undefined : { recipients: [await recipientOf(identity)] },
    tags: [],
    logger: silentLogger,
  });
}

const folder = (m: Manifest) => path.join(work, 'backups', m.set, m.id);
const fileOf = (m: Manifest, format: string) =>
  path.join(folder(m), m.artifacts.find((a) => a.format === format)!.name);

async function rewriteManifest(m: Manifest, change: (m: Manifest) => void): Promise<void> {
  const edited = structuredClone(m);
  change(edited);
  await fs.writeFile(path.join(folder(m), 'manifest.json'), JSON.stringify(edited, null, 2));
}

/** Replaces a stored artifact by `bytes`, with a manifest that matches them (as a writer of the bucket can). */
async function replaceArtifact(m: Manifest, format: string, bytes: Buffer, plainBytes: number) {
  await fs.writeFile(fileOf(m, format), bytes);
  await rewriteManifest(m, (e) => {
    const a = e.artifacts.find((x) => x.format === format)!;
    a.bytes = bytes.length;
    a.contentBytes = plainBytes;
    a.sha256 = createHash('sha256').update(bytes).digest('hex');
  });
}

const verify = (inputs: Record<string, string>) =>
  runVerify({ storage: path.join(work, 'backups'), 'age-identity': identity }, inputs);
const row = checkRow;

async function assertGone(run: Verified): Promise<void> {
  assert.equal(run.report.environment.type, 'folder');
  assert.equal(run.report.environment.removed, true);
  const left = (await fs.readdir(run.workDir)).filter((n) => n.startsWith('lifeboat-files-verify-'));
  assert.deepEqual(left, [], 'the throwaway folder is gone');
}

async function assertFailedOn(run: Verified, name: string, detail: RegExp): Promise<void> {
  const { result, report } = run;
  assert.equal(report.passed, false);
  assert.equal(result.outputs.passed, 'false');
  const check = row(report, name);
  assert.equal(check.status, 'failed', `${name}: ${check.detail}`);
  assert.match(check.detail, detail);
  assert.ok(
    result.failed?.some((line) => line.includes(`'${name}' failed`)),
    String(result.failed),
  );
  await assertGone(run);
}

before(async () => {
  work = await tempDir('verify-files');
  source = path.join(work, 'etc-nova');
  await makeHostileTree(source, 3 * 1024 * 1024);
  storage = openStorage(path.join(work, 'backups'));
  identity = await generateIdentity();
});

after(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

describe('the passing drill', () => {
  let run: Verified;
  let manifest: Manifest;
  let seen: string;
  before(async () => {
    manifest = await backup('etc-nova');
    seen = path.join(work, 'seen-by-check.txt');
    run = await verify({
      set: 'etc-nova',
      'check-commands': `
- name: nova.conf is there
  run: find "$RESTORED_DIR" -mindepth 1 -maxdepth 1 -printf '%f\\0' > ${seen}
- name: the backup is named
  run: test -n "$LIFEBOAT_BACKUP_ID" && test "$LIFEBOAT_SET" = etc-nova
`,
      'max-age': '1h',
      'max-restore-time': '10m',
    });
  });

  test('the backup has an index beside its archive', () => {
    assert.deepEqual(
      manifest.artifacts.map((a) => [a.name, a.format]),
      [
        ['files.tar.zst.age', 'tar'],
        ['index.jsonl.zst.age', 'index.jsonl'],
      ],
    );
  });

  test('every check passes, each a named row', () => {
    const { report, result } = run;
    assert.equal(report.passed, true, JSON.stringify(report.checks, null, 1));
    assert.equal(result.failed, undefined);
    for (const name of [
      'sha256: files.tar.zst.age',
      'decrypt: files.tar.zst.age',
      'archive: files.tar.zst.age',
      'restore',
      'files',
      'check: nova.conf is there',
      'check: the backup is named',
    ]) {
      assert.equal(row(report, name).status, 'passed', `${name}: ${row(report, name).detail}`);
    }
    const facts = manifest.facts as unknown as { files: number; symlinks: number };
    assert.match(row(report, 'files').detail, new RegExp(`^${facts.files} files .*every size, sha256`));
    assert.ok(report.checks.some((c) => c.name.startsWith('RPO') && c.status === 'passed'));
    assert.ok(report.checks.some((c) => c.name.startsWith('RTO') && c.status === 'passed'));
  });

  test('RTO and RPO are reported', () => {
    assert.ok(run.report.restoreSeconds !== null && run.report.restoreSeconds > 0);
    assert.equal(run.result.outputs['rto-seconds'], run.report.restoreSeconds.toFixed(3));
    assert.ok(run.report.ageSeconds < 3600);
    assert.equal(run.report.kind, 'files');
  });

  test('the check commands saw the restored folder, which is gone afterwards', async () => {
    const listed = (await fs.readFile(seen, 'utf8')).split('\0').filter(Boolean);
    assert.deepEqual(listed.sort(), (await fs.readdir(source)).sort());
    await assertGone(run);
  });

  test('the catalog records the verification, so the set is no longer "never verified"', async () => {
    const catalog = new Catalog(storage);
    const [entry] = await catalog.listBackups('etc-nova');
    const record = await catalog.lastVerification(entry!);
    assert.equal(record?.passed, true);
    assert.equal(record?.environment, 'folder');
  });
});

describe('each failure is named in the report', () => {
  test('a byte flipped in the stored archive', async () => {
    const m = await backup('flipped');
    const file = fileOf(m, 'tar');
    const bytes = await fs.readFile(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    await fs.writeFile(file, bytes);
    const run = await verify({ set: 'flipped' });
    await assertFailedOn(run, 'sha256: files.tar.zst.age', /sha256|damaged/i);
    assert.equal(row(run.report, 'files').status, 'skipped');
    assert.equal(run.report.restoreSeconds, null);
  });

  test('a truncated archive', async () => {
    const m = await backup('truncated');
    await fs.truncate(fileOf(m, 'tar'), Math.floor(m.artifacts[0]!.bytes * 0.6));
    await assertFailedOn(await verify({ set: 'truncated' }), 'sha256: files.tar.zst.age', /bytes|damaged/i);
  });

  test('the wrong age identity', async () => {
    await backup('wrong-key');
    const run = await verify({ set: 'wrong-key', 'age-identity': await generateIdentity() });
    await assertFailedOn(run, 'decrypt: files.tar.zst.age', /none of the given keys can decrypt/);
  });

  test('a manifest whose file count was edited', async () => {
    const m = await backup('edited');
    await rewriteManifest(m, (e) => {
      (e.facts as unknown as { files: number }).files += 1;
    });
    const run = await verify({ set: 'edited' });
    await assertFailedOn(
      run,
      'archive: files.tar.zst.age',
      /the archive holds \d+ files, the manifest records/,
    );
    assert.equal(row(run.report, 'sha256: files.tar.zst.age').status, 'passed');
  });

  test('a file changed in the archive (re-packed with matching sha256s): the index names it', async () => {
    const m = await backup('repacked', { encrypted: false, compression: 'none' });
    const file = fileOf(m, 'tar');
    const tar = await fs.readFile(file);
    // A file of the hostile tree holding text; change one of its bytes in place (same size).
    const at = tar.indexOf('at the bottom');
    assert.ok(at > 0, 'the archive holds a text file');
    tar[at] = 'A'.charCodeAt(0);
    await replaceArtifact(m, 'tar', tar, tar.length);
    const run = await verify({ set: 'repacked', 'allow-unencrypted': 'true' });
    await assertFailedOn(run, 'files', /sha256 [0-9a-f]{12}… restored, [0-9a-f]{12}… indexed/);
    assert.equal(row(run.report, 'archive: files.tar').status, 'passed');
  });

  test('a check command that fails', async () => {
    await backup('check-fails');
    const run = await verify({
      set: 'check-fails',
      'check-commands': '- name: nginx.conf exists\n  run: test -f "$RESTORED_DIR/nginx.conf"\n',
    });
    await assertFailedOn(run, 'check: nginx.conf exists', /exit status 1/);
  });

  test('a backup made before the index: the per-file row says so, the rest passes', async () => {
    const m = await backup('old-style');
    await fs.rm(fileOf(m, 'index.jsonl'));
    await rewriteManifest(m, (e) => {
      e.artifacts = e.artifacts.filter((a) => a.format === 'tar');
    });
    const run = await verify({ set: 'old-style' });
    assert.equal(run.report.passed, true, JSON.stringify(run.report.checks));
    assert.equal(row(run.report, 'files').status, 'skipped');
    assert.match(row(run.report, 'files').detail, /no index/);
    await assertGone(run);
  });
});

describe('a hostile index (the bucket is not trusted)', () => {
  /** Writes `lines` as the index of a fresh unencrypted backup (zstd, with a matching manifest). */
  async function withIndex(set: string, edit: (lines: string[]) => string[]): Promise<Verified> {
    const m = await backup(set, { encrypted: false });
    const plain = zlib.zstdDecompressSync(await fs.readFile(fileOf(m, 'index.jsonl')));
    const lines = plain.toString('utf8').trimEnd().split('\n');
    const text = Buffer.from(`${edit(lines).join('\n')}\n`);
    await replaceArtifact(m, 'index.jsonl', zlib.zstdCompressSync(text), text.length);
    return verify({ set, 'allow-unencrypted': 'true' });
  }

  const cases: [string, (lines: string[]) => string[], RegExp][] = [
    [
      'a path outside the folder',
      (l) => [
        l[0]!,
        JSON.stringify({ type: 'file', path: '../../etc/passwd', size: 1, sha256: 'a'.repeat(64) }),
        ...l.slice(1),
      ],
      /index line 2: the path "\.\.\/\.\.\/etc\/passwd" is not a plain relative path/,
    ],
    [
      'an absolute path',
      (l) => [l[0]!, JSON.stringify({ type: 'symlink', path: '/etc/shadow', target: 'x' }), ...l.slice(1)],
      /index line 2: the path "\/etc\/shadow" is not a plain relative path/,
    ],
    ['cut short (no end line)', (l) => l.slice(0, -3), /without its end line \(cut short\)/],
    ['not JSON', (l) => [l[0]!, '{"type": "file", "pa', ...l.slice(1)], /index line 2: not JSON/],
    [
      'an unknown entry type',
      (l) => [l[0]!, '{"type":"device","path":"sda"}', ...l.slice(1)],
      /unknown entry type/,
    ],
    ['no header', (l) => l.slice(1), /index line 1: not the header/],
    [
      'a line of a megabyte',
      (l) => [l[0]!, JSON.stringify({ type: 'directory', path: 'x'.repeat(1024 * 1024) }), ...l.slice(1)],
      /an index line is longer than 65536 bytes/,
    ],
    [
      'a size that disagrees with the file',
      (l) =>
        l.map((line) =>
          line.replace(/("type":"file","path":"[^"]*","size":)(\d+)/, (_, a, n) => `${a}${Number(n) + 1}`),
        ),
      /bytes restored, \d+ indexed/,
    ],
    [
      'more after the end line',
      (l) => [...l, '{"type":"directory","path":"later"}'],
      /there is more after the end line/,
    ],
  ];
  for (const [name, edit, detail] of cases) {
    test(name, async () => {
      const run = await withIndex(`hostile-${name.replace(/[^a-z]+/g, '-')}`.slice(0, 60), edit);
      await assertFailedOn(run, 'files', detail);
      // The archive itself was fine; only the per-file proof failed.
      assert.equal(row(run.report, 'archive: files.tar.zst').status, 'passed');
    });
  }
});

test('the post step removes a throwaway folder a killed verification left', async (t) => {
  const { removeKindLeftovers } = await import('../../shared/kinds/index.ts');
  const workDir = await tempDir('verify-files-post');
  const dir = await fs.mkdtemp(path.join(workDir, 'lifeboat-files-verify-'));
  await fs.writeFile(path.join(dir, 'restored-file'), 'x');
  await removeKindLeftovers('verify', { type: 'files-verify', dir }, () => undefined, silentLogger);
  assert.deepEqual(await fs.readdir(workDir), []);
  t.after(() => fs.rm(workDir, { recursive: true, force: true }));
  await assert.rejects(
    removeKindLeftovers('verify', { type: 'files-verify', dir: workDir }, () => undefined, silentLogger),
    /is not a verify-restore folder; left alone/,
  );
});
