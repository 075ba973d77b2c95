/**
 * prune-retention through the built bundle, as a runner runs it; and, as an operator meets
 * them at night, restic's words in a policy, a damaged newest backup and a typo in a set name.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Catalog } from '../../shared/catalog/catalog.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { backupFolder } from '../harness/catalog.ts';
import { errorLines, runAction, runCli } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';

let work: string;
let storage: string;
before(async () => {
  work = await tempDir('prune-e2e');
  storage = path.join(work, 'backups');
  await fs.mkdir(path.join(work, 'src'));
  await fs.writeFile(path.join(work, 'src', 'a.conf'), 'a = 1\n');
  for (let i = 0; i < 3; i++) {
    const run = await runAction('backup-files', { storage, set: 'conf', source: path.join(work, 'src') }, {});
    assert.equal(run.code, 0, run.stdout);
  }
});
after(() => fs.rm(work, { recursive: true, force: true }));

const committed = async () =>
  (await new Catalog(openStorage(storage)).listBackups('conf')).filter((b) => b.committed).length;

test('an empty policy is refused with one line, and nothing is deleted', async () => {
  const run = await runAction('prune-retention', { storage, set: 'conf' }, {});
  assert.equal(run.code, 1);
  assert.deepEqual(errorLines(run).length, 1);
  assert.match(errorLines(run)[0]!, /the policy keeps nothing by rule; give at least one of keep-last/);
  assert.equal(await committed(), 3);
});

test('in a pull request, dry-run auto plans and deletes nothing', async () => {
  const run = await runAction(
    'prune-retention',
    { storage, set: 'conf', 'keep-last': '1' },
    { GITHUB_EVENT_NAME: 'pull_request' },
  );
  assert.equal(run.code, 0, run.stdout);
  assert.equal(run.outputs.deleted, '0');
  assert.match(run.summary, /would delete/);
  assert.equal(JSON.parse(run.outputs.result!).dryRun, true);
  assert.equal(await committed(), 3);
});

test('on a schedule it deletes what the policy does not keep, and reports why each is kept', async () => {
  const run = await runAction(
    'prune-retention',
    { storage, set: '*', 'keep-last': '1' },
    { GITHUB_EVENT_NAME: 'schedule' },
  );
  assert.equal(run.code, 0, run.stdout);
  assert.equal(run.outputs.deleted, '2');
  assert.ok(Number(run.outputs['bytes-freed']) > 0);
  const result = JSON.parse(run.outputs.result!);
  assert.deepEqual(result.sets[0].plan.backups[0].reasons.sort(), ['last', 'min-keep', 'newest']);
  assert.equal(await committed(), 1);
});

/** 40 nightly backups at 03:15 UTC up to yesterday, made in-process with those ids. */
async function nightly(set: string): Promise<{ storage: string; ids: string[] }> {
  const where = path.join(work, `nightly-${set}`);
  const store = openStorage(where);
  const today = new Date();
  const ids: string[] = [];
  for (let i = 40; i >= 1; i--) {
    const time = new Date(
      Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i, 3, 15),
    );
    ids.unshift(
      (await backupFolder({ storage: store, set, source: path.join(work, 'src'), now: () => time })).id,
    );
  }
  return { storage: where, ids };
}

test("keep-within 1m is restic's month: 40 nightly backups keep a month of them, not one", async () => {
  const { storage: where, ids } = await nightly('monthly');
  const run = await runAction(
    'prune-retention',
    { storage: where, set: 'monthly', 'keep-within': '1m', 'dry-run': 'true' },
    { GITHUB_EVENT_NAME: 'schedule' },
  );
  assert.equal(run.code, 0, run.stdout);
  const plan = JSON.parse(run.outputs.result!).sets[0].plan;
  const kept = plan.backups.filter((b: { keep: boolean }) => b.keep).map((b: { id: string }) => b.id);
  // Newer than the newest minus one calendar month: 28 to 31 nights, depending on the month.
  assert.ok(kept.length >= 28 && kept.length <= 31, `kept ${kept.length}`);
  assert.deepEqual(kept, ids.slice(0, kept.length));
  const yearly = await runAction(
    'prune-retention',
    { storage: where, set: 'monthly', 'keep-within': '1y', 'dry-run': 'true' },
    {},
  );
  assert.equal(yearly.code, 0, yearly.stdout);
  assert.equal(yearly.outputs.deleted, '0');
  assert.ok(JSON.parse(yearly.outputs.result!).sets[0].plan.backups.every((b: { keep: boolean }) => b.keep));
});

test('keep-daily 0 alone is an empty policy: refused with one line, nothing deleted', async () => {
  const run = await runAction(
    'prune-retention',
    { storage, set: 'conf', 'keep-daily': '0', 'dry-run': 'false' },
    { GITHUB_EVENT_NAME: 'schedule' },
  );
  assert.equal(run.code, 1, run.stdout);
  assert.equal(errorLines(run).length, 1);
  assert.match(errorLines(run)[0]!, /the policy keeps nothing by rule/);
  const minutes = await runAction('prune-retention', { storage, set: 'conf', 'keep-within': '30min' }, {});
  assert.equal(minutes.code, 1, minutes.stdout);
  assert.match(
    errorLines(minutes)[0]!,
    /keep-within: '30min' is not accepted \(restic has no minutes, and m is months\)/,
  );
});

test('the CLI: restore latest refuses a damaged newest backup and names the newest intact one', async () => {
  const where = path.join(work, 'damaged');
  const store = openStorage(where);
  const older = await backupFolder({ storage: store, set: 'etc', source: path.join(work, 'src') });
  const newer = await backupFolder({
    storage: store,
    set: 'etc',
    source: path.join(work, 'src'),
    now: () => new Date(Date.now() + 60_000),
  });
  await store.putBytes(`etc/${newer.id}/manifest.json`, Buffer.from('{"format": 1, "id": '));
  const target = path.join(work, 'restored');
  const latest = await runCli(['restore', '--storage', where, '--set', 'etc', '--target', target], {});
  assert.equal(latest.code, 1, latest.stderr);
  assert.match(
    latest.stderr,
    new RegExp(
      `error: backup etc/${newer.id} in .*: manifest.json is not valid JSON\\. That is the newest backup of set 'etc' \\(${newer.id}\\), and latest does not pass over it silently: the newest intact backup is ${older.id}; restore it with backup: ${older.id}`,
    ),
  );
  const byId = await runCli(
    ['restore', '--storage', where, '--set', 'etc', '--target', target, '--backup', older.id],
    {},
  );
  assert.equal(byId.code, 0, byId.stderr);
  assert.equal(await fs.readFile(path.join(target, 'a.conf'), 'utf8'), 'a = 1\n');
  const list = await runCli(['list', '--storage', where, '--json'], {});
  assert.equal(list.code, 0, list.stderr);
  const listing = JSON.parse(list.stdout).result;
  assert.deepEqual(
    [listing.backups.map((b: { id: string }) => b.id), listing.damaged.map((d: { id: string }) => d.id)],
    [[older.id], [newer.id]],
  );
  const typo = await runCli(['list', '--storage', where, '--set', 'ect'], {});
  assert.equal(typo.code, 1, typo.stderr);
  assert.match(typo.stderr, /error: set: 'ect' is not a set in .*; sets here: etc\n/);
});
