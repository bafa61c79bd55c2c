// did:plc directory mock (@did-plc/server with an in-memory database).
const { createRequire } = require('node:module');
const req = createRequire(process.env.PDS_MODULES + '/');
const plc = req('@did-plc/server');
const server = plc.PlcServer.create({ db: plc.Database.mock(), port: Number(process.env.PORT) });
server.start()
  .then(() => console.log('plc listening on ' + process.env.PORT))
  .catch((e) => { console.error(e); process.exit(1); });
