/**
 * snapshot-ebs through the built bundle, as a runner runs it, against the fake EC2
 * (AWS_ENDPOINT_URL_EC2): an instance's volumes snapshotted, tagged, waited for, copied to a
 * second region and committed in the catalog, which `list` then shows.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { type FakeEc2, startFakeEc2 } from '../fakes/ec2.ts';
import { errorLines, runAction, runCli } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';

let fake: FakeEc2;
let work: string;
const aws = () => ({
  AWS_ENDPOINT_URL_EC2: fake.url,
  AWS_ACCESS_KEY_ID: 'AKIDFAKE',
  AWS_SECRET_ACCESS_KEY: 'secret',
  AWS_REGION: 'eu-west-1',
});

before(async () => {
  fake = await startFakeEc2();
  work = await tempDir('ebs-e2e');
});
after(async () => {
  await fake?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

test('the action snapshots an instance, copies it off-site and commits the manifest', async () => {
  const { instanceId, volumeIds } = fake.addInstance({
    volumes: [{ device: '/dev/xvda' }, { device: '/dev/sdf', size: 20 }],
  });
  const storage = path.join(work, 'backups');
  const run = await runAction(
    'snapshot-ebs',
    {
      storage,
      set: 'app-disks',
      'instance-id': instanceId,
      'copy-to-regions': 'eu-central-1',
      tags: 'team=platform',
      'poll-interval': '20ms',
    },
    aws(),
  );
  assert.equal(run.code, 0, run.stdout);
  assert.deepEqual(Object.keys(JSON.parse(run.outputs['snapshot-ids']!)), volumeIds);
  assert.match(run.outputs.uri!, /app-disks\/\d{4}-\d{2}-\d{2}-\d{4}-backup-full\/$/);
  assert.match(run.summary, /\/dev\/sdf/);
  assert.match(run.summary, /eu-central-1: snap-/);
  const copies = [...fake.snapshots.values()].filter((s) => s.region === 'eu-central-1');
  assert.equal(copies.length, 2);
  assert.ok(copies.every((c) => c.state === 'completed' && c.tags.team === 'platform'));
  const list = await runCli(['list', '--storage', storage, '--set', 'app-disks'], {});
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /app-disks\s+\S+-backup-full\s+ebs\s+full/);
});

test('verify-restore and a swapping restore of that backup, through the built bundle', async () => {
  const storage = path.join(work, 'backups');
  const verify = await runAction(
    'verify-restore',
    {
      storage,
      set: 'app-disks',
      'poll-interval': '20ms',
      'max-restore-time': '5m',
      'report-file': path.join(work, 'r.json'),
    },
    aws(),
  );
  assert.equal(verify.code, 0, verify.stdout);
  assert.equal(verify.outputs.passed, 'true');
  assert.match(verify.summary, /volume: \/dev\/sdf/);
  assert.equal(verify.state.leftovers, '', 'the test volumes are gone');
  const restore = await runAction(
    'restore',
    { storage, set: 'app-disks', swap: 'true', 'stop-instance': 'true', 'poll-interval': '20ms' },
    aws(),
  );
  assert.equal(restore.code, 0, restore.stdout);
  const result = JSON.parse(restore.outputs.result!);
  assert.equal(result.swapped, true);
  assert.equal(result.volumes.length, 2);
});

test('a failing quiesce command fails the step with one line and takes no snapshot', async () => {
  const { volumeIds } = fake.addInstance({ volumes: [{ device: '/dev/xvda' }] });
  const before = fake.snapshots.size;
  const run = await runAction(
    'snapshot-ebs',
    {
      set: 'app-disks',
      'volume-ids': volumeIds[0]!,
      'pre-command': 'exit 7',
      'post-command': 'echo mirror started',
    },
    aws(),
  );
  assert.equal(run.code, 1);
  assert.deepEqual(errorLines(run), ['::error::pre-command: failed (exit status 7)']);
  assert.match(run.stdout, /post-command: mirror started/);
  assert.equal(fake.snapshots.size, before);
});
