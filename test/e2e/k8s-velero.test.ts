/**
 * backup-k8s with velero-storage through the built bundle, as a runner runs it (against the
 * fake kube-apiserver: the real control plane is test/integration/k8s-velero.test.ts's): the
 * outputs and summary name the Velero copy, GNU tar and gzip read it (entries rwxr-xr-x), and
 * prune-retention deletes the copy of the backup it deletes.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { KubeClient } from '../../shared/k8s/client.ts';
import { type FakeKube, fakeKubeconfig, startFakeKube } from '../fakes/kube-apiserver.ts';
import { errorLines, runAction } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';

let fake: FakeKube;
let work: string;
let kubeconfig: string;
let storage: string;
let velero: string;

before(async () => {
  work = await tempDir('k8s-velero-e2e');
  storage = path.join(work, 'lifeboat');
  velero = path.join(work, 'velero');
  fake = await startFakeKube();
  kubeconfig = path.join(work, 'kubeconfig');
  await fs.writeFile(kubeconfig, fakeKubeconfig(fake.url));
  const client = await KubeClient.open(kubeconfig);
  await client.request('POST', '/api/v1/namespaces', { metadata: { name: 'shop' } });
  await client.request('POST', '/api/v1/namespaces/shop/configmaps', {
    metadata: { name: 'settings' },
    data: { a: '1' },
  });
});
after(async () => {
  await fake?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

const backup = () =>
  runAction(
    'backup-k8s',
    {
      storage,
      set: 'shop',
      kubeconfig,
      'include-namespaces': 'shop',
      'velero-storage': velero,
      'velero-storage-location': 'primary',
    },
    {},
  );

const names: string[] = [];

test('the action writes the Velero copy and names it in its outputs and summary', async () => {
  const run = await backup();
  assert.equal(run.code, 0, run.stdout);
  const name = run.outputs['velero-backup']!;
  assert.equal(name, `shop-${run.outputs['backup-id']}`);
  names.push(name);
  const manifest = JSON.parse(run.outputs.result!);
  assert.equal(manifest.facts.velero.storage, pathToFileURL(velero).href);
  assert.equal(manifest.facts.velero.name, name);
  assert.match(run.summary, new RegExp(`Velero copy ${name} \\(not encrypted\\)`));
  const dir = path.join(velero, 'backups', name);
  assert.deepEqual((await fs.readdir(velero)).sort(), ['backups']);
  assert.deepEqual((await fs.readdir(dir)).sort(), [
    `${name}-resource-list.json.gz`,
    `${name}.tar.gz`,
    'velero-backup.json',
  ]);
  const listing = execFileSync('tar', ['-tvzf', path.join(dir, `${name}.tar.gz`)], { encoding: 'utf8' })
    .trim()
    .split('\n');
  assert.ok(listing.length > 2);
  for (const line of listing) assert.match(line, /^-rwxr-xr-x /, line);
  assert.ok(
    listing.some((l) =>
      l.endsWith(' resources/configmaps/v1-preferredversion/namespaces/shop/settings.json'),
    ),
  );
  const backupObject = JSON.parse(await fs.readFile(path.join(dir, 'velero-backup.json'), 'utf8'));
  assert.equal(backupObject.status.phase, 'Completed');
  assert.equal(backupObject.spec.storageLocation, 'primary');
});

test('an overlapping velero-storage is refused with one line, before any work', async () => {
  const run = await runAction(
    'backup-k8s',
    { storage, set: 'shop', kubeconfig, 'velero-storage': path.join(storage, 'velero') },
    {},
  );
  assert.equal(run.code, 1);
  assert.equal(errorLines(run).length, 1, run.stdout);
  assert.match(errorLines(run)[0]!, /velero-storage: .* overlaps storage/);
});

test('prune-retention deletes the Velero copy with its backup', async () => {
  const second = await backup();
  assert.equal(second.code, 0, second.stdout);
  names.push(second.outputs['velero-backup']!);
  const run = await runAction(
    'prune-retention',
    { storage, set: 'shop', 'keep-last': '1' },
    { GITHUB_EVENT_NAME: 'schedule' },
  );
  assert.equal(run.code, 0, run.stdout);
  assert.equal(run.outputs.deleted, '1');
  assert.match(run.stdout, /deleted 1 Velero copy/);
  assert.deepEqual(await fs.readdir(path.join(velero, 'backups')), [names[1]]);
});
