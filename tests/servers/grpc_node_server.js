// A gRPC server podprobe did not write: Node's @grpc/grpc-js with the
// helloworld.Greeter service and, with --health, the standard
// grpc.health.v1.Health (from the grpc-health-check package).
//
// Every call it served is one JSON line on stdout:
//   {"peer":"10.244.0.2:41234","method":"/helloworld.Greeter/SayHello","code":0}
// so tests can count calls per connection (a connection is its client's
// address and port) and compare with podprobe's evidence.
//
// Usage: node grpc_node_server.js --listen ADDR:PORT [--name NAME]
//          [--health] [--health-status SERVING|NOT_SERVING]
//          [--fail CODE[:MESSAGE]] [--max-connection-age-ms N]
//          [--tls-cert FILE --tls-key FILE]
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { HealthImplementation } = require('grpc-health-check');

function parseArgs(argv) {
  const args = { name: 'node', healthStatus: 'SERVING' };
  for (let i = 0; i < argv.length; i++) {
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`);
      return argv[++i];
    };
    switch (argv[i]) {
      case '--listen': args.listen = next(); break;
      case '--name': args.name = next(); break;
      case '--health': args.health = true; break;
      case '--health-status': args.healthStatus = next(); break;
      case '--fail': args.fail = next(); break;
      case '--max-connection-age-ms': args.maxAgeMs = Number(next()); break;
      case '--tls-cert': args.tlsCert = next(); break;
      case '--tls-key': args.tlsKey = next(); break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!args.listen) throw new Error('--listen ADDR:PORT is required');
  return args;
}

const args = parseArgs(process.argv.slice(2));

function log(peer, method, code) {
  // Synchronous, so a SIGKILL loses no line.
  fs.writeSync(1, JSON.stringify({ peer, method, code }) + '\n');
}

// --fail 14:draining answers every call with that status.
const failure = args.fail && (() => {
  const [code, ...message] = args.fail.split(':');
  return { code: Number(code), details: message.join(':') || 'failing on purpose' };
})();

// Wraps a service's unary handlers: log each call, or fail it.
function served(service, implementation) {
  const wrapped = {};
  for (const [key, handler] of Object.entries(implementation)) {
    const method = service[key] || Object.values(service).find((m) => m.originalName === key);
    const methodPath = method ? method.path : key;
    if (method && (method.requestStream || method.responseStream)) {
      wrapped[key] = handler;
      continue;
    }
    wrapped[key] = (call, callback) => {
      const peer = call.getPeer();
      if (failure) {
        log(peer, methodPath, failure.code);
        callback(failure, null);
        return;
      }
      handler(call, (err, reply) => {
        log(peer, methodPath, err ? err.code : 0);
        callback(err, reply);
      });
    };
  }
  return wrapped;
}

const options = {};
if (args.maxAgeMs) {
  options['grpc.max_connection_age_ms'] = args.maxAgeMs;
  options['grpc.max_connection_age_grace_ms'] = 10000;
}
const server = new grpc.Server(options);

// Calls to methods the server lacks never reach a handler: grpc-js answers
// them UNIMPLEMENTED itself. Observe (without changing) that answer so they
// are logged too.
const respondWithError = server._respondWithError.bind(server);
server._respondWithError = (err, stream, ...rest) => {
  const socket = stream && stream.session && stream.session.socket;
  if (socket) {
    log(`${socket.remoteAddress}:${socket.remotePort}`, '(not implemented)', err.code);
  }
  return respondWithError(err, stream, ...rest);
};

const greeterDefinition = protoLoader.loadSync(path.join(__dirname, 'greeter.proto'));
const greeter = grpc.loadPackageDefinition(greeterDefinition).helloworld.Greeter.service;
server.addService(greeter, served(greeter, {
  SayHello: (call, callback) => callback(null, { message: `hello from ${args.name}` }),
}));

if (args.health) {
  const health = new HealthImplementation({ '': args.healthStatus });
  // addToServer registers the implementation; log its calls on the way.
  health.addToServer({
    addService: (service, implementation) => server.addService(service, served(service, implementation)),
  });
}

const credentials = args.tlsCert
  ? grpc.ServerCredentials.createSsl(null, [{
    cert_chain: fs.readFileSync(args.tlsCert),
    private_key: fs.readFileSync(args.tlsKey),
  }], false)
  : grpc.ServerCredentials.createInsecure();

server.bindAsync(args.listen, credentials, (err, port) => {
  if (err) {
    process.stderr.write(`cannot listen on ${args.listen}: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`grpc-js server ${args.name} listening on port ${port}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.tryShutdown(() => process.exit(0)));
}
