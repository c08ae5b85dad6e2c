import time, statistics, numpy as np, torch, onnxruntime as ort
from transformers import AutoTokenizer, AutoModelForSequenceClassification
from onnxruntime.quantization import quantize_dynamic, QuantType
from emotion_triton.export import LogitsOnly
torch.set_num_threads(2)
ck="runs/minilm-offline/checkpoint"
tok=AutoTokenizer.from_pretrained(ck); model=AutoModelForSequenceClassification.from_pretrained(ck).eval()
texts=[l.rsplit(";",1)[0] for l in open("../shared/data/emotion/validation.txt").read().splitlines()][:1000]
inner=LogitsOnly(model).eval()
ex=tok(texts[:4],padding=True,return_tensors="pt")
torch.onnx.export(inner,(ex["input_ids"],ex["attention_mask"]),"/tmp/m15/fp32.onnx",input_names=["input_ids","attention_mask"],output_names=["logits"],dynamic_axes={"input_ids":{0:"b",1:"s"},"attention_mask":{0:"b",1:"s"},"logits":{0:"b"}},opset_version=17,dynamo=False)
quantize_dynamic("/tmp/m15/fp32.onnx","/tmp/m15/int8.onnx",weight_type=QuantType.QInt8)
def sess(p):
    o=ort.SessionOptions(); o.intra_op_num_threads=2; o.inter_op_num_threads=1
    o.graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(p,o,providers=["CPUExecutionProvider"])
def run_ort(s):
    return lambda ids,m: s.run(None,{"input_ids":ids,"attention_mask":m})[0]
qmodel=torch.ao.quantization.quantize_dynamic(model,{torch.nn.Linear},dtype=torch.qint8)
def run_torch(mdl):
    def f(ids,m):
        with torch.inference_mode(): return mdl(input_ids=torch.from_numpy(ids),attention_mask=torch.from_numpy(m)).logits.numpy()
    return f
systems={"ort fp32":run_ort(sess("/tmp/m15/fp32.onnx")),"ort int8":run_ort(sess("/tmp/m15/int8.onnx")),"torch fp32":run_torch(model),"torch int8":run_torch(qmodel)}
order=sorted(texts,key=len)
for name,f in systems.items():
    enc=[tok(t,return_tensors="np") for t in texts[:200]]
    for e in enc[:20]: f(e["input_ids"],e["attention_mask"])
    lat=[]
    for e in enc:
        t0=time.perf_counter(); f(e["input_ids"],e["attention_mask"]); lat.append(time.perf_counter()-t0)
    t0=time.perf_counter()
    for i in range(0,len(order),64):
        e=tok(order[i:i+64],padding=True,return_tensors="np"); f(e["input_ids"],e["attention_mask"])
    el=time.perf_counter()-t0
    print(f"{name}: p50 one text {statistics.median(lat)*1e3:.2f} ms, sorted b64 {len(order)/el:.0f} texts/s",flush=True)
