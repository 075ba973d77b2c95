/**
 * Whoever can write the storage controls every byte of a backup, the manifest included, with
 * hashes that match. These backups are crafted as such a bucket owner would: a manifest that
 * says it is another set or another backup (`../../x`), an artifact named `../../evil`, and an
 * encrypted backup replaced by an unencrypted one. Restore, verify-restore and list must
 * refuse each with one clear error, and write nothing anywhere.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateIdentity } from 'age-encryption';
import { describeFailure, exitCodeOf, makeReader, runCommand } from '../../shared/action/run.ts';
import type { Command, CommandResult } from '../../shared/action/spec.ts';
import { Catalog } from '../../shared/catalog/catalog.ts';
import { isArtifactName, type Manifest } from '../../shared/catalog/manifest.ts';
import { listCatalog, listCommand } from '../../shared/commands/list.ts';
import { restoreCommand } from '../../shared/commands/restore.ts';
import { verifyRestoreCommand } from '../../shared/commands/verify-restore.ts';
import { UserError } from '../../shared/errors.ts';
import { dumpMysql } from '../../shared/mysql/dump.ts';
import { recipientOf } from '../../shared/pipeline/encryption.ts';
import { type Logger, silentLogger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import type { Storage } from '../../shared/storage/storage.ts';
import type { VerifyReport } from '../../shared/verify/report.ts';
import { backupFolder } from '../harness/catalog.ts';
import {
  connectionInputs,
  databases,
  type EphemeralServer,
  sampleShop,
  sql,
  startMysql,
  targetOf,
} from '../harness/mysql.ts';
import { tempDir } from '../harness/servers.ts';

let work: string;
let backups: string;
let storage: Storage;
let source: string;
let identity: string;

/** The minute a backup is taken: its id is then known, `<day>-0315-backup-full`. */
const at = (day: number) => () => new Date(Date.UTC(2026, 10, day, 3, 15));
const idOf = (day: number) => `2026-11-${String(day).padStart(2, '0')}-0315-backup-full`;

before(async () => {
  work = await tempDir('manifest-trust');
  backups = path.join(work, 'backups');
  storage = openStorage(backups);
  source = path.join(work, 'source');
  await fs.mkdir(source);
  await fs.writeFile(path.join(source, 'app.conf'), 'listen = 8080\n');
  identity = await generateIdentity();
});
after(() => fs.rm(work, { recursive: true, force: true }));

/** Every path under the test's folder: what a refused command must leave exactly as it was. */
async function tree(dir = work): Promise<string[]> {
  return (await fs.readdir(dir, { recursive: true })).sort();
}

/** Runs a command as the action and the CLI do: inputs by name, the spec's defaults. */
async function run(
  command: unknown,
  inputs: Record<string, string>,
  logger: Logger = silentLogger,
): Promise<CommandResult> {
  const c = command as Command<never>;
  return runCommand(
    c,
    makeReader(c, (spec) => inputs[spec.name] ?? spec.default),
    logger,
  );
}

/** The command fails with exactly `message`, as a failure the user acts on (exit status 1). */
async function refused(running: Promise<unknown>, message: string): Promise<void> {
  await assert.rejects(running, (error: unknown) => {
    assert.ok(error instanceof UserError, `a UserError: ${error}`);
    assert.equal(error.message, message);
    assert.equal(exitCodeOf(describeFailure(error)), 1);
    return true;
  });
}

/** Overwrites a backup's manifest as the bucket owner can: any JSON at all. */
async function writeManifest(set: string, id: string, manifest: unknown): Promise<void> {
  await storage.putBytes(`${set}/${id}/manifest.json`, Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`));
}

/** A committed files backup of `set` taken on `day`, whose manifest `edit` then rewrites. */
async function crafted(set: string, day: number, edit: (m: Manifest) => unknown): Promise<Manifest> {
  const manifest = await backupFolder({ storage, set, source, now: at(day) });
  await writeManifest(set, manifest.id, edit(structuredClone(manifest)));
  return manifest;
}

describe('a manifest describes the folder it was read from', () => {
  let secret: Manifest;
  before(async () => {
    const secretSource = path.join(work, 'secret-source');
    await fs.mkdir(secretSource);
    await fs.writeFile(path.join(secretSource, 'secret.txt'), 'only for the secret set\n');
    secret = await backupFolder({ storage, set: 'secret', source: secretSource, now: at(20) });
  });

  test("a manifest that says it is another set's backup is refused; that backup is not restored", async () => {
    // The secret set's manifest, word for word, copied into etc: restoring etc read the secret set.
    await crafted('other-set', 21, () => secret);
    const target = path.join(work, 'restored-other-set');
    const before = await tree();
    for (const backup of ['latest', idOf(21)]) {
      await refused(
        run(restoreCommand, { storage: backups, set: 'other-set', backup, target }),
        `backup: the manifest in other-set/${idOf(21)}/ says it is set 'secret', backup '${idOf(20)}'; a manifest must describe its own folder, so the backup is refused`,
      );
    }
    assert.deepEqual(await tree(), before, 'nothing was written');
  });

  test("a manifest whose id is '../../x' is refused and nothing is written outside", async () => {
    await crafted('dotdot', 21, (m) => ({ ...m, id: '../../x' }));
    const target = path.join(work, 'restored-dotdot');
    const before = await tree();
    await refused(
      run(restoreCommand, { storage: backups, set: 'dotdot', target }),
      `backup: the manifest in dotdot/${idOf(21)}/ says it is set 'dotdot', backup '../../x'; a manifest must describe its own folder, so the backup is refused`,
    );
    assert.deepEqual(await tree(), before, 'nothing was written');
    await assert.rejects(fs.stat(path.join(work, 'x')), { code: 'ENOENT' });
  });

  test("a manifest whose set and id both differ ('x', '../../y') names both", async () => {
    await crafted('both', 21, (m) => ({ ...m, set: 'x', id: '../../y' }));
    await refused(
      new Catalog(storage).resolve('both', 'latest'),
      `backup: the manifest in both/${idOf(21)}/ says it is set 'x', backup '../../y'; a manifest must describe its own folder, so the backup is refused`,
    );
  });

  for (const name of ['../../evil', '..', 'a/b', '', '..\\evil']) {
    test(`an artifact named '${name}' is refused before anything is read`, async () => {
      const set = `artifact-${['../../evil', '..', 'a/b', '', '..\\evil'].indexOf(name)}`;
      await crafted(set, 21, (m) => ({ ...m, artifacts: [{ ...m.artifacts[0]!, name }] }));
      const target = path.join(work, `restored-${set}`);
      const before = await tree();
      await refused(
        run(restoreCommand, { storage: backups, set, target }),
        `backup ${set}/${idOf(21)} in ${storage.url}: manifest.json is invalid at artifacts.0.name: '${name}' is not a plain file name (an artifact is a file of its own backup folder: not empty, no '/', '\\' or '..')`,
      );
      assert.deepEqual(await tree(), before, 'nothing was written');
      await assert.rejects(fs.stat(path.join(work, 'evil')), { code: 'ENOENT' });
    });
  }

  test('artifact names: a plain file name of the backup folder, as Lifeboat makes them', () => {
    for (const ok of ['files.tar.zst.age', 'dump.sql.zst', 'resources.tar.gz', 'files.tar'])
      assert.equal(isArtifactName(ok), true, ok);
    for (const bad of ['', '.', '..', '../x', 'x/..', '/etc/passwd', 'a\\b', 'a..b', 'a\nb', 'x'.repeat(256)])
      assert.equal(isArtifactName(bad), false, JSON.stringify(bad));
  });

  test("verify-restore of a manifest whose id is '../../../x' writes no report and no record", async () => {
    await crafted('verify-dotdot', 21, (m) => ({ ...m, id: '../../../x' }));
    // Deep enough that a report at work-dir/../x.json would still land in the test's folder.
    const workDir = path.join(work, 'deep', 'down', 'work-dir');
    await fs.mkdir(workDir, { recursive: true });
    const before = await tree();
    await refused(
      run(verifyRestoreCommand, {
        storage: backups,
        set: 'verify-dotdot',
        'work-dir': workDir,
        'progress-interval': '1h',
      }),
      `backup: the manifest in verify-dotdot/${idOf(21)}/ says it is set 'verify-dotdot', backup '../../../x'; a manifest must describe its own folder, so the backup is refused`,
    );
    assert.deepEqual(
      await tree(),
      before,
      'no report (in work-dir or outside it) and no verification record',
    );
    await assert.rejects(fs.stat(path.join(workDir, '..', 'x.json')), { code: 'ENOENT' });
  });

  test('a folder whose name is not a backup id is refused before its manifest is read', async () => {
    await storage.putBytes('odd/not-an-id/manifest.json', Buffer.from('{}'));
    await refused(
      new Catalog(storage).readManifest('odd', 'not-an-id'),
      `backup: the folder odd/not-an-id/ is not a backup folder: 'not-an-id' is not a backup id Lifeboat makes (such as 2026-11-21-0315-backup-full), so the backup is refused`,
    );
    await refused(
      new Catalog(storage).readManifest('Odd Set', idOf(21)),
      `backup: the folder Odd Set/${idOf(21)}/ is not a backup folder: 'Odd Set' is not a set name Lifeboat makes, so the backup is refused`,
    );
  });

  test('a verification record is never written under a name that is not a backup folder', async () => {
    await refused(
      new Catalog(storage).recordVerification({
        format: 1,
        backupId: '../../x',
        set: 'etc',
        at: new Date().toISOString(),
        passed: true,
        checks: [],
        tool: { name: 'lifeboat', version: '0' },
      }),
      "verification: set 'etc', backup '../../x' is not a backup folder Lifeboat makes; the record is not written",
    );
  });

  test('list shows a refused folder as damaged, not as a backup, and does not fail', async () => {
    const set = 'listed';
    await backupFolder({ storage, set, source, now: at(20) });
    await crafted(set, 21, (m) => ({ ...m, id: '../../x' }));
    const reason = `backup: the manifest in ${set}/${idOf(21)}/ says it is set '${set}', backup '../../x'; a manifest must describe its own folder, so the backup is refused`;
    const listing = await listCatalog(new Catalog(storage), set);
    assert.deepEqual(
      listing.backups.map((b) => b.id),
      [idOf(20)],
    );
    assert.deepEqual(listing.damaged, [{ set, id: idOf(21), reason }]);
    const warnings: string[] = [];
    const result = await run(
      listCommand,
      { storage: backups, set },
      { info() {}, warn: (m) => warnings.push(m) },
    );
    assert.equal(result.outputs.count, '1');
    assert.deepEqual(warnings, [`not listed: ${set}/${idOf(21)}: ${reason}`]);
    assert.ok(
      result.summary?.notes?.some((n) =>
        n.startsWith(
          `1 backup folder(s) with a manifest Lifeboat refuses are not listed and cannot be restored: ${set}/${idOf(21)}`,
        ),
      ),
    );
    // The whole storage lists too: every set, the hostile ones above among them.
    const all = await listCatalog(new Catalog(storage));
    assert.ok(all.damaged.some((d) => d.set === 'other-set'));
    assert.ok(all.backups.some((b) => b.set === 'secret'));
  });
});

const unencrypted = (id: string) =>
  `backup: the artifact files.tar.zst of ${id} is not encrypted, but an age identity was given; a backup that should be encrypted may have been replaced. Set allow-unencrypted: true to restore it anyway`;

describe('no silent downgrade: an unencrypted backup is refused when keys are given', () => {
  let plain: Manifest;
  before(async () => {
    // An encrypted backup replaced by one the bucket owner made without the keys.
    plain = await backupFolder({ storage, set: 'downgraded', source, now: at(21) });
    await backupFolder({
      storage,
      set: 'encrypted',
      source,
      now: at(21),
      encryption: { recipients: [await recipientOf(identity)] },
    });
  });

  test('restore with an age identity: refused, and nothing is restored', async () => {
    const target = path.join(work, 'restored-downgraded');
    const before = await tree();
    await refused(
      run(restoreCommand, { storage: backups, set: 'downgraded', target, 'age-identity': identity }),
      unencrypted(plain.id),
    );
    assert.deepEqual(await tree(), before, 'nothing was written');
  });

  test('restore with a passphrase: refused the same way', async () => {
    const target = path.join(work, 'restored-downgraded-passphrase');
    await refused(
      run(restoreCommand, {
        storage: backups,
        set: 'downgraded',
        target,
        'age-passphrase': 'correct horse battery staple',
      }),
      `backup: the artifact files.tar.zst of ${plain.id} is not encrypted, but an age passphrase was given; a backup that should be encrypted may have been replaced. Set allow-unencrypted: true to restore it anyway`,
    );
    await assert.rejects(fs.stat(target), { code: 'ENOENT' });
  });

  test('allow-unencrypted: true restores it', async () => {
    const target = path.join(work, 'restored-allowed');
    const result = await run(restoreCommand, {
      storage: backups,
      set: 'downgraded',
      target,
      'age-identity': identity,
      'allow-unencrypted': 'true',
    });
    assert.equal(result.outputs['backup-id'], plain.id);
    assert.equal(await fs.readFile(path.join(target, 'app.conf'), 'utf8'), 'listen = 8080\n');
  });

  test('without keys an unencrypted backup restores as before', async () => {
    const target = path.join(work, 'restored-no-keys');
    await run(restoreCommand, { storage: backups, set: 'downgraded', target });
    assert.equal(await fs.readFile(path.join(target, 'app.conf'), 'utf8'), 'listen = 8080\n');
  });

  test('an encrypted backup still restores with its identity', async () => {
    const target = path.join(work, 'restored-encrypted');
    await run(restoreCommand, { storage: backups, set: 'encrypted', target, 'age-identity': identity });
    assert.equal(await fs.readFile(path.join(target, 'app.conf'), 'utf8'), 'listen = 8080\n');
  });

  test('allow-unencrypted takes true or false', async () => {
    await assert.rejects(
      run(restoreCommand, {
        storage: backups,
        set: 'downgraded',
        target: path.join(work, 'never'),
        'allow-unencrypted': 'maybe',
      }),
      /allow-unencrypted: 'maybe' is not accepted; accepted: true or false/,
    );
  });
});

describe('no silent downgrade of a MySQL backup: restore and verify-restore', () => {
  let server: EphemeralServer;
  let plain: Manifest;
  const artifactError = (id: string) =>
    `backup: the artifact dump.sql.zst of ${id} is not encrypted, but an age identity was given; a backup that should be encrypted may have been replaced. Set allow-unencrypted: true to restore it anyway`;

  const dump = async (set: string, encrypted: boolean) =>
    dumpMysql({
      storage,
      set,
      target: targetOf(server),
      databases: ['shop'],
      includeSystemDatabases: false,
      excludeTables: [],
      binlogPosition: 'off',
      compression: 'zstd',
      encryption: encrypted ? { recipients: [await recipientOf(identity)] } : undefined,
      tags: [],
      logger: silentLogger,
    });

  async function verify(inputs: Record<string, string>) {
    const workDir = await tempDir('manifest-trust-verify');
    const result = await run(verifyRestoreCommand, {
      storage: backups,
      'work-dir': workDir,
      'progress-interval': '1h',
      'age-identity': identity,
      ...inputs,
    });
    const report = JSON.parse(await fs.readFile(result.outputs.report!, 'utf8')) as VerifyReport;
    assert.equal(path.dirname(result.outputs.report!), workDir, 'the report is in work-dir');
    assert.equal(report.environment.removed, true);
    assert.deepEqual(
      (await fs.readdir(workDir)).filter((n) => n.startsWith('lifeboat-mysqld')),
      [],
      'the throwaway server is gone',
    );
    await fs.rm(workDir, { recursive: true, force: true });
    return { result, report };
  }

  before(async () => {
    server = await startMysql();
    await sql(server, sampleShop);
    plain = await dump('shop-downgraded', false);
    await dump('shop-encrypted', true);
  });
  after(() => server?.stop());

  test('restore with an age identity: refused, and no database is created', async () => {
    await refused(
      run(restoreCommand, {
        storage: backups,
        set: 'shop-downgraded',
        ...connectionInputs(server),
        rename: 'shop=shop_downgraded',
        'age-identity': identity,
      }),
      artifactError(plain.id),
    );
    assert.ok(!(await databases(server)).includes('shop_downgraded'));
    assert.deepEqual(
      (await databases(server)).filter((d) => d.includes('lifeboat')),
      [],
      'no staging database is left',
    );
  });

  test('restore with allow-unencrypted: true restores it', async () => {
    await run(restoreCommand, {
      storage: backups,
      set: 'shop-downgraded',
      ...connectionInputs(server),
      rename: 'shop=shop_allowed',
      'age-identity': identity,
      'allow-unencrypted': 'true',
    });
    assert.equal((await sql(server, 'SELECT COUNT(*) FROM shop_allowed.orders')).trim(), '2000');
  });

  test('verify-restore with an age identity: the decrypt check fails, nothing is restored', async () => {
    const { result, report } = await verify({ set: 'shop-downgraded' });
    assert.equal(report.passed, false);
    assert.equal(result.outputs.passed, 'false');
    const check = (name: string) => report.checks.find((c) => c.name === name);
    assert.deepEqual(check('decrypt: dump.sql.zst'), {
      name: 'decrypt: dump.sql.zst',
      status: 'failed',
      detail: artifactError(plain.id),
    });
    assert.equal(check('sha256: dump.sql.zst')?.status, 'skipped');
    assert.equal(check('parse: dump.sql.zst')?.status, 'skipped');
    assert.equal(check('rows: shop')?.status, 'skipped');
    assert.equal(result.outputs['rto-seconds'], '');
    assert.deepEqual(result.failed, [
      `verify-restore: check 'decrypt: dump.sql.zst' failed: ${artifactError(plain.id)}`,
    ]);
  });

  test('verify-restore with allow-unencrypted: true passes', async () => {
    const { report } = await verify({ set: 'shop-downgraded', 'allow-unencrypted': 'true' });
    assert.equal(report.passed, true, JSON.stringify(report.checks));
  });

  test('an encrypted backup still verifies with its identity', async () => {
    const { report } = await verify({ set: 'shop-encrypted' });
    assert.equal(report.passed, true, JSON.stringify(report.checks));
    assert.equal(report.checks.find((c) => c.name === 'decrypt: dump.sql.zst.age')?.status, 'passed');
  });
});
