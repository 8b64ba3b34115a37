import pkg from '../../package.json' with { type: 'json' };

/** The agent ships with the geminik8s release it was built from. */
export const AGENT_VERSION: string = pkg.version;
