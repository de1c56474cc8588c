// Validate custom resources against their CRDs' published schemas (compiled by kubernetes-models).
// stdin: a JSON list of rendered objects; prints one line per custom resource; exit 1 if any fails.
import {readFileSync} from "node:fs";
import {ScaledObject} from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import {ServiceMonitor} from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const models = {ScaledObject, ServiceMonitor};
let failed = 0;
for (const object of JSON.parse(readFileSync(0, "utf8"))) {
  const Model = models[object.kind];
  if (!Model) continue;
  try {
    new Model(object).validate();
    console.log(`ok ${object.kind}`);
  } catch (e) {
    failed++;
    console.log(`invalid ${object.kind}: ${e.message}`);
  }
}
process.exit(failed ? 1 : 0);
