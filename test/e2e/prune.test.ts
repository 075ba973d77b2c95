/** prune-retention through the built bundle, as a runner runs it. */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Catalog } from '../../shared/catalog/catalog.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { errorLines, runAction } from '../harness/runner.ts';
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
