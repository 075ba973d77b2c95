#!/usr/bin/env node
// The `lifeboat` command: the same commands and inputs as the actions, from the built bundle.
let bundle;
try {
  bundle = await import('../dist/index.js');
} catch (error) {
  if (error?.code !== 'ERR_MODULE_NOT_FOUND') throw error;
  console.error('error: the bundle dist/index.js is missing; run npm run build first');
  process.exit(2);
}
await bundle.cli(process.argv.slice(2));
