/**
 * The umbrella action (`uses: owner/lifeboat@v1` with `command:`) through the built bundle:
 * a command behaves as through its own action, also where commands' defaults differ (the
 * value of every input is checked in test/unit/umbrella.test.ts).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Catalog } from '../../shared/catalog/catalog.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { runAction } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';

let work: string;
let storage: string;
before(async () => {
  work = await tempDir('umbrella');
  storage = path.join(work, 'backups');
  await fs.mkdir(path.join(work, 'src'));
  await fs.writeFile(path.join(work, 'src', 'a.conf'), 'a = 1\n');
  for (let i = 0; i < 3; i++) {
    const run = await runAction(
      undefined,
      { command: 'backup-files', storage, set: 'conf', source: path.join(work, 'src') },
      {},
    );
    assert.equal(run.code, 0, run.stdout);
  }
});
after(() => fs.rm(work, { recursive: true, force: true }));

const committed = async () =>
  (await new Catalog(openStorage(storage)).listBackups('conf')).filter((b) => b.committed).length;

test('in a pull request, prune-retention through the umbrella is a dry run (dry-run auto), as through its own action', async () => {
  for (const umbrella of [true, false]) {
    const inputs = { storage, set: 'conf', 'keep-last': '1' };
    const run = umbrella
      ? await runAction(
          undefined,
          { command: 'prune-retention', ...inputs },
          { GITHUB_EVENT_NAME: 'pull_request' },
        )
      : await runAction('prune-retention', inputs, { GITHUB_EVENT_NAME: 'pull_request' });
    assert.equal(run.code, 0, run.stdout);
    assert.equal(JSON.parse(run.outputs.result!).dryRun, true, umbrella ? 'umbrella' : 'own action');
    assert.equal(run.outputs.deleted, '0');
    assert.equal(await committed(), 3);
  }
});

test('on a schedule, the umbrella prunes as the command does', async () => {
  const run = await runAction(
    undefined,
    { command: 'prune-retention', storage, set: 'conf', 'keep-last': '1' },
    { GITHUB_EVENT_NAME: 'schedule' },
  );
  assert.equal(run.code, 0, run.stdout);
  assert.equal(run.outputs.deleted, '2');
  assert.equal(await committed(), 1);
});
