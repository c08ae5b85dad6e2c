"""Per-step time of lone requests through the served ensemble, from Triton's per-model statistics."""
import json, sys, time, statistics, urllib.request
from pathlib import Path
import numpy as np, tritonclient.grpc as grpcclient
from emotion_triton.benchmark import serve_repository
repo=Path(sys.argv[1]); classifier=sys.argv[2]; n=int(sys.argv[3]) if len(sys.argv)>3 else 300
texts=[l.rsplit(";",1)[0] for l in open("../shared/data/emotion/validation.txt").read().splitlines()][:n]
def stats(url):
    d=json.load(urllib.request.urlopen(f"http://{url}/v2/models/stats"))
    return {m["name"]:m for m in d["model_stats"]}
s=serve_repository(repo, Path("/tmp/m15"), classifier)
if True:
    c=grpcclient.InferenceServerClient(s.grpc_url)
    def send(t):
        i=grpcclient.InferInput("TEXT",[1,1],"BYTES"); i.set_data_from_numpy(np.array([[t.encode()]],dtype=object))
        return c.infer("emotion",[i])
    for t in texts[:30]: send(t)
    before=stats(s.http_url); lat=[]
    for t in texts:
        t0=time.perf_counter(); send(t); lat.append(time.perf_counter()-t0)
    after=stats(s.http_url)
    print(f"client p50 {statistics.median(lat)*1e3:.2f} ms mean {statistics.mean(lat)*1e3:.2f}")
    for name in after:
        a,b=after[name]["inference_stats"],before[name]["inference_stats"]
        cnt=a["success"]["count"]-b["success"]["count"]
        if not cnt: continue
        parts={k:(a[k]["ns"]-b[k]["ns"])/cnt/1e6 for k in ("success","queue","compute_input","compute_infer","compute_output")}
        print(name, " ".join(f"{k} {v:.3f}" for k,v in parts.items()))
c.close(); s.stop()
