/**
 * `lifeboat report` rendered in a real browser (Debian's chromium, headless): the numbers in
 * the DOM are the catalog's, failures come first, the charts have a bar per backup, and a
 * hostile verification record (the bucket is not trusted) is shown as text: no script runs and
 * nothing is fetched. A screenshot is taken (kept where LIFEBOAT_REPORT_SCREENSHOT says).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeReader, runCommand } from '../../shared/action/run.ts';
import { Catalog } from '../../shared/catalog/catalog.ts';
import { totalBytes } from '../../shared/catalog/manifest.ts';
import { commands } from '../../shared/commands/index.ts';
import { backupFiles } from '../../shared/files/backup.ts';
import { formatBytes, silentLogger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { chromiumInstalled, dumpDom, screenshot } from '../harness/chromium.ts';
import { type Recorder, startRecorder } from '../harness/http-recorder.ts';
import { tempDir } from '../harness/servers.ts';
import { runVerify } from '../harness/verify-run.ts';

let work: string;
let backups: string;
let leak: Recorder;
let reportFile: string;
let dom: string;
const bytesOf: Record<string, number> = {};
let rto: number;

const report = commands.find((c) => c.name === 'report')!;

async function backup(set: string, source: string) {
  const storage = openStorage(backups);
  const manifest = await backupFiles({
    storage,
    set,
    source,
    include: [],
    exclude: [],
    compression: 'zstd',
    tags: [],
    logger: silentLogger,
  });
  if (set === 'etc-nova') bytesOf[manifest.id] = totalBytes(manifest);
  return manifest;
}

/** The attributes of the first element whose opening tag matches `selector` (a regexp source). */
function attributes(html: string, tag: string, where: string): Record<string, string> {
  const match = new RegExp(`<${tag}\\b[^>]*${where}[^>]*>`).exec(html);
  assert.ok(match, `an element <${tag} … ${where}>`);
  return Object.fromEntries([...match[0].matchAll(/([\w-]+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
}

/** The HTML of the set's section. */
function section(html: string, set: string): string {
  const start = html.indexOf(`<section class="set" id="set-${set}"`);
  assert.ok(start >= 0, `a section for ${set}`);
  return html.slice(start, html.indexOf('</section>', start));
}

describe('the HTML report in chromium', { skip: !chromiumInstalled && 'chromium is not installed' }, () => {
  before(async () => {
    work = await tempDir('report');
    backups = path.join(work, 'backups');
    leak = await startRecorder();
    const source = path.join(work, 'etc-nova');
    await fs.mkdir(source);
    for (let i = 1; i <= 3; i++) {
      await fs.writeFile(path.join(source, `file-${i}.conf`), 'x'.repeat(20_000 * i));
      await backup('etc-nova', source);
    }
    const verified = await runVerify({ storage: backups }, { set: 'etc-nova', 'max-age': '1h' });
    assert.equal(verified.report.passed, true);
    rto = verified.report.restoreSeconds!;
    // A set whose newest verification record was written by whoever holds the bucket.
    const hostile = await backup('etc-keystone', source);
    await new Catalog(openStorage(backups)).recordVerification({
      format: 1,
      backupId: hostile.id,
      set: 'etc-keystone',
      at: new Date().toISOString(),
      passed: false,
      checks: [
        {
          name: `<script>document.title='pwned'</script><img src="${leak.url}/leak.png">`,
          passed: false,
          detail: `<iframe src="${leak.url}/frame"></iframe>`,
        },
      ],
      restoreSeconds: 12,
      ageSeconds: 30,
      environment: 'folder',
      tool: { name: 'lifeboat', version: '0' },
    });
    reportFile = path.join(work, 'out', 'report.html');
    const inputs: Record<string, string> = {
      storage: backups,
      set: 'etc-nova,etc-keystone,etc-glance',
      output: reportFile,
      'max-age': '26h',
    };
    const result = await runCommand(
      report,
      makeReader(report, (s) => inputs[s.name] ?? s.default),
      silentLogger,
    );
    assert.equal(result.outputs.report, reportFile);
    assert.equal(result.outputs.failing, 'etc-glance,etc-keystone');
    dom = await dumpDom(reportFile);
  });

  after(async () => {
    await leak?.stop();
    await fs.rm(work, { recursive: true, force: true });
  });

  test('the overview: every set, failures first, with the numbers of the catalog', () => {
    const order = [...dom.matchAll(/<tr data-set="([^"]+)" data-status="([^"]+)"/g)].map(
      (m) => `${m[1]} ${m[2]}`,
    );
    assert.deepEqual(order, ['etc-glance MISSING', 'etc-keystone FAILED', 'etc-nova OK']);
    const nova = attributes(dom, 'tr', 'data-set="etc-nova"');
    const newest = Object.keys(bytesOf).sort()[2]!;
    assert.equal(Number(nova['data-bytes']), bytesOf[newest]);
    assert.equal(nova['data-verification'], 'passed');
    assert.ok(Number(nova['data-age-seconds']) < 600);
    const row = dom.slice(
      dom.indexOf('<tr data-set="etc-nova"'),
      dom.indexOf('</tr>', dom.indexOf('<tr data-set="etc-nova"')),
    );
    assert.match(
      row,
      new RegExp(`<td class="num size">${formatBytes(bytesOf[newest]!).replace('.', '\\.')}</td>`),
    );
    assert.match(row, /<td class="num">3<\/td>/, 'three backups');
  });

  test('each set: its backups newest first with size, RTO and RPO; a bar per backup', () => {
    const nova = section(dom, 'etc-nova');
    const rows = [...nova.matchAll(/<tr data-id="([^"]+)" data-bytes="(\d+)" data-rto-seconds="([^"]*)"/g)];
    assert.equal(rows.length, 3);
    const ids = rows.map((r) => r[1]!);
    assert.deepEqual(ids, [...ids].sort().reverse(), 'newest first');
    for (const r of rows) assert.equal(Number(r[2]), bytesOf[r[1]!]);
    assert.equal(Number(rows[0]![3]), rto, 'the newest was verified: its RTO');
    assert.equal(rows[1]![3], '', 'the others were not');
    assert.equal((nova.match(/<rect class="bar"/g) ?? []).length, 3 + 1 + 1, 'sizes ×3, RTO ×1, RPO ×1');
    const bars = [...nova.matchAll(/<rect class="bar" [^>]*data-value="(\d+)"/g)]
      .slice(0, 3)
      .map((m) => Number(m[1]));
    assert.deepEqual(
      bars,
      [...ids].reverse().map((id) => bytesOf[id]),
      'the size chart, oldest left',
    );
    assert.match(section(dom, 'etc-glance'), /MISSING/);
  });

  test('a hostile verification record is text: no script ran, nothing was fetched', () => {
    assert.doesNotMatch(dom, /<script|<img|<iframe/i);
    assert.match(
      dom,
      /&lt;script&gt;document\.title='pwned'&lt;\/script&gt;&lt;img src="http:\/\/127\.0\.0\.1/,
    );
    assert.match(dom, /<title>Lifeboat report: /);
    assert.doesNotMatch(dom, /pwned<\/title>/);
    assert.deepEqual(leak.requests, [], 'the browser fetched nothing');
  });

  test('a screenshot renders (and is kept for a look where asked)', async () => {
    const png = path.join(work, 'report.png');
    await screenshot(reportFile, png, 1200, 1400);
    const bytes = await fs.readFile(png);
    assert.equal(bytes.subarray(1, 4).toString(), 'PNG');
    assert.equal(bytes.readUInt32BE(16), 1200, 'its width');
    assert.ok(bytes.length > 20_000, `a page with content (${bytes.length} bytes)`);
    assert.deepEqual(leak.requests, []);
    const keep = process.env.LIFEBOAT_REPORT_SCREENSHOT;
    if (keep) await fs.copyFile(png, keep);
  });
});

test('report refuses bad inputs, one line each, and writes nothing', async () => {
  const dir = await tempDir('report-bad');
  const inputs: Record<string, string> = {
    storage: path.join(dir, 'nowhere'),
    last: '0',
    'max-age': 'soon',
    output: path.join(dir, 'r.html'),
  };
  await assert.rejects(
    runCommand(
      report,
      makeReader(report, (s) => inputs[s.name] ?? s.default),
      silentLogger,
    ),
    (error: { lines?: string[] }) => {
      assert.ok(
        error.lines?.some((l) => l.startsWith('last:')),
        String(error.lines),
      );
      assert.ok(error.lines?.some((l) => l.startsWith('max-age:')));
      return true;
    },
  );
  assert.deepEqual(await fs.readdir(dir), []);
  await fs.rm(dir, { recursive: true });
});
