// The build's two fixes to TorchSharp's output copies (a build output, never the NuGet cache), both idempotent.
// - TorchSharpScalarLifetime PATH/TorchSharp.dll: keeps every TorchSharp Scalar and Tensor whose native handle a TorchSharp
//   method reads alive until that method returns. Why: src/ResearchKit/build/ResearchKit.targets and environment.md,
//   "TorchSharp Scalar lifetime".
// - TorchSharpScalarLifetime --native PATH/libLibTorchSharp.so: marks GLIBCXX_3.4.32 weak where the system's libstdc++
//   lacks it, with the library's own code (TorchSharpNative.Elf.cs, linked). Why: environment.md, "Debian 12 native fix".
using Mono.Cecil;
using Mono.Cecil.Cil;
using Mono.Cecil.Rocks;
using ResearchKit;

if (args is ["--native", var library] && File.Exists(library))
{
    try
    {
        if (TorchSharpNative.PatchInPlace(library))
            Console.WriteLine($"{library}: marked {TorchSharpNative.MissingVersion} weak (the system's libstdc++ lacks it)");
    }
    catch (InvalidDataException e)
    {
        Console.WriteLine($"{library}: {e.Message}; TorchSharp native fix skipped");
    }
    return 0;
}
if (args.Length != 1 || !File.Exists(args[0]))
{
    Console.Error.WriteLine("usage: TorchSharpScalarLifetime PATH/TorchSharp.dll | --native PATH/libLibTorchSharp.so");
    return 2;
}
var path = args[0];
const string MarkerNamespace = "ResearchKit", MarkerName = "ScalarLifetimePatched";
int methods = 0;
var temp = path + ".patching";
using (var module = ModuleDefinition.ReadModule(path, new ReaderParameters { ReadingMode = ReadingMode.Immediate }))
{
    if (module.Types.Any(t => t.Namespace == MarkerNamespace && t.Name == MarkerName)) return 0;   // already patched
    var gc = module.GetTypeReferences().FirstOrDefault(t => t.FullName == "System.GC");
    if (gc is null)
    {
        Console.Error.WriteLine($"{path}: holds no reference to System.GC; the Scalar lifetime patch was not applied");
        return 1;
    }
    var keepAlive = new MethodReference("KeepAlive", module.TypeSystem.Void, gc) { HasThis = false };
    keepAlive.Parameters.Add(new ParameterDefinition(module.TypeSystem.Object));
    foreach (var method in module.GetTypes().SelectMany(t => t.Methods).Where(m => m.HasBody))
        if (KeepHandlesAlive(method.Body, keepAlive)) methods++;
    module.Types.Add(new TypeDefinition(MarkerNamespace, MarkerName, TypeAttributes.NotPublic | TypeAttributes.Sealed | TypeAttributes.Abstract,
        module.TypeSystem.Object));
    module.Write(temp);
}
File.Move(temp, path, overwrite: true);   // a rename: never writes through a link into the NuGet cache
Console.WriteLine($"{path}: Scalars and Tensors kept alive through native calls in {methods} methods");
return 0;

static bool Owned(TypeReference type) => type.FullName is "TorchSharp.Scalar" or "TorchSharp.torch/Tensor";

// Reads of a Scalar's or Tensor's native handle: the property (call get_Handle) or the field (ldfld handle).
static bool ReadsHandle(Instruction i) =>
    (i.OpCode == OpCodes.Call || i.OpCode == OpCodes.Callvirt) && i.Operand is MethodReference { Name: "get_Handle" } m && Owned(m.DeclaringType)
    || i.OpCode == OpCodes.Ldfld && i.Operand is FieldReference { Name: "handle" } f && Owned(f.DeclaringType);

static bool KeepHandlesAlive(MethodBody body, MethodReference keepAlive)
{
    var reads = body.Instructions.Where(ReadsHandle).ToList();
    if (reads.Count == 0) return false;
    body.SimplifyMacros();
    var il = body.GetILProcessor();
    var held = new List<VariableDefinition>();
    foreach (var read in reads)
    {
        // `x.Handle` becomes `dup; stloc held; x.Handle`, edited in place so that branches to it still land on it.
        var local = new VariableDefinition(body.Method.Module.TypeSystem.Object);
        body.Variables.Add(local);
        held.Add(local);
        var original = read.Operand is FieldReference field ? il.Create(OpCodes.Ldfld, field) : il.Create(read.OpCode, (MethodReference)read.Operand!);
        read.OpCode = OpCodes.Dup;
        read.Operand = null;
        il.InsertAfter(read, original);
        il.InsertAfter(read, il.Create(OpCodes.Stloc, local));
    }
    foreach (var ret in body.Instructions.Where(i => i.OpCode == OpCodes.Ret).ToList())
    {
        // `ret` becomes `ldloc held; call GC.KeepAlive; …; ret`, again in place.
        ret.OpCode = OpCodes.Ldloc;
        ret.Operand = held[0];
        var last = Append(il, ret, il.Create(OpCodes.Call, keepAlive));
        foreach (var local in held.Skip(1))
            last = Append(il, Append(il, last, il.Create(OpCodes.Ldloc, local)), il.Create(OpCodes.Call, keepAlive));
        Append(il, last, il.Create(OpCodes.Ret));
    }
    body.InitLocals = true;
    body.OptimizeMacros();
    return true;
}

static Instruction Append(ILProcessor il, Instruction after, Instruction next)
{
    il.InsertAfter(after, next);
    return next;
}
