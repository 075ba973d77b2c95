import type { Manifest } from '../../catalog/manifest.ts';
import { mysqlFacts } from '../../mysql/facts.ts';

/**
 * What the anomaly gates compare of a MySQL backup: tables and rows in all, and the rows of
 * each table ('rows:<db>.<table>'), as dump-mysql counted them in the dump itself.
 */
export function mysqlMetrics(manifest: Manifest): Record<string, number> {
  const metrics: Record<string, number> = {};
  let tables = 0;
  let rows = 0;
  for (const db of mysqlFacts(manifest).databases) {
    if (typeof db?.name !== 'string' || typeof db.tables !== 'object' || db.tables === null) continue;
    for (const [table, count] of Object.entries(db.tables)) {
      if (typeof count !== 'number') continue;
      tables++;
      rows += count;
      metrics[`rows:${db.name}.${table}`] = count;
    }
  }
  return { tables, rows, ...metrics };
}
