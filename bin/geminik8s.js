#!/usr/bin/env node
// Runs the TypeScript CLI directly (tsx); the build host has Node 20 and `npm ci` installed tsx.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../builder/src/cli/main.ts');
process.exitCode = await main(process.argv);
