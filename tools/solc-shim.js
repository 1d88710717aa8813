#!/usr/bin/env node
// A `solc` stand-in for py-solc-x / ape-solidity, backed by the npm `solc` (solcjs) package.
// It answers only what ape-solidity asks: `--version` and `--standard-json` (stdin -> stdout).
// solcjs's own CLI cannot be used: it prints a notice before the JSON and exits before a large
// piped stdout is flushed, so this script never calls process.exit while output is pending.
'use strict';
const path = require('path');
const solc = require(path.join(__dirname, '..', 'node_modules', 'solc'));

const args = process.argv.slice(2);
if (args.includes('--version')) {
  const full = solc.version(); // e.g. 0.8.28+commit.7893614a.Emscripten.clang
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${full.replace('.Emscripten.clang', '.Linux.g++')}\n`);
} else if (args.includes('--standard-json')) {
  const chunks = [];
  process.stdin.on('data', (c) => chunks.push(c));
  process.stdin.on('end', () => {
    const input = Buffer.concat(chunks).toString('utf8');
    const base = process.cwd();
    const allowed = args.filter((a, i) => args[i - 1] === '--allow-paths').join(',').split(',').filter(Boolean);
    const roots = [base, ...allowed];
    const findImports = (p) => {
      for (const root of roots) {
        const full = path.resolve(root, p);
        try { return { contents: require('fs').readFileSync(full, 'utf8') }; } catch (e) { /* next root */ }
      }
      return { error: `File not found: ${p}` };
    };
    process.stdout.write(solc.compile(input, { import: findImports }));
  });
} else {
  process.stderr.write('solc-shim: only --version and --standard-json are supported\n');
  process.exitCode = 2;
}
