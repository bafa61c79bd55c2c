// One reference PDS process (@atproto/pds), configured from PDS_* variables.
// PUBLIC_URL, when set, is the URL its DID documents name as the PDS: the
// Caddy front of all replicas, not this process's own port.
const { createRequire } = require('node:module');
const req = createRequire(process.env.PDS_MODULES + '/');
const { PDS, envToCfg, envToSecrets, readEnv } = req('@atproto/pds');
(async () => {
  const env = readEnv();
  const cfg = envToCfg(env);
  if (process.env.PUBLIC_URL) cfg.service.publicUrl = process.env.PUBLIC_URL;
  const pds = await PDS.create(cfg, envToSecrets(env));
  await pds.start();
  console.log('pds listening on ' + cfg.service.port + ' as ' + cfg.service.publicUrl);
  const stop = async () => { await pds.destroy(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
})().catch((e) => { console.error(e); process.exit(1); });
