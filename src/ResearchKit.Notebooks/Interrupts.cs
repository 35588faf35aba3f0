using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using static Microsoft.CodeAnalysis.CSharp.SyntaxFactory;

namespace ResearchKit.Notebooks;

/// <summary>
/// Makes a cell interruptible without Thread.Abort (which .NET no longer has): before compiling, every loop body and
/// every method (but Dispose), local function and lambda body in the cell starts with <see cref="Check"/>, which throws once the
/// running cell's token is cancelled (an interrupt, a --timeout). A `while (true) {}` then stops within one iteration,
/// and the session keeps the state of earlier cells. The call is inserted on the line of the opening brace, so line
/// numbers in errors and stack traces do not move. Code in libraries is not rewritten: it stops where it checks a token
/// (the trainer and sweeps do, given the cell's Cancel).
/// </summary>
public static class Interrupts
{
    static CancellationToken current;

    /// <summary>The token of the cell now running; methods defined in earlier cells check it too.</summary>
    public static CancellationToken Current
    {
        get => current;
        internal set => current = value;
    }

    /// <summary>Throws OperationCanceledException when the running cell has been interrupted.</summary>
    public static void Check() => current.ThrowIfCancellationRequested();

    public static string Instrument(string code)
    {
        var tree = NotebookSession.ParseCell(code);
        if (tree.GetDiagnostics().Any(d => d.Severity == DiagnosticSeverity.Error)) return code;   // let the compiler report it on the original
        return new CheckInserter().Visit(tree.GetRoot()).ToFullString();
    }

    sealed class CheckInserter : CSharpSyntaxRewriter
    {
        static readonly StatementSyntax CheckCall = ParseStatement("global::ResearchKit.Notebooks.Interrupts.Check();");

        static BlockSyntax WithCheck(BlockSyntax block) =>
            block.WithStatements(block.Statements.Insert(0, CheckCall.WithLeadingTrivia(Space).WithTrailingTrivia(Space)));

        /// <summary>A loop body, made a block when it is a single statement, starting with the check (kept on its line).</summary>
        static StatementSyntax Body(StatementSyntax body) => body is BlockSyntax block
            ? WithCheck(block)
            : Block(CheckCall.WithTrailingTrivia(Space), body.WithoutTrivia()).WithLeadingTrivia(body.GetLeadingTrivia()).WithTrailingTrivia(body.GetTrailingTrivia());

        public override SyntaxNode? VisitWhileStatement(WhileStatementSyntax node) =>
            ((WhileStatementSyntax)base.VisitWhileStatement(node)!) is var n ? n.WithStatement(Body(n.Statement)) : null;
        public override SyntaxNode? VisitDoStatement(DoStatementSyntax node) =>
            ((DoStatementSyntax)base.VisitDoStatement(node)!) is var n ? n.WithStatement(Body(n.Statement)) : null;
        public override SyntaxNode? VisitForStatement(ForStatementSyntax node) =>
            ((ForStatementSyntax)base.VisitForStatement(node)!) is var n ? n.WithStatement(Body(n.Statement)) : null;
        public override SyntaxNode? VisitForEachStatement(ForEachStatementSyntax node) =>
            ((ForEachStatementSyntax)base.VisitForEachStatement(node)!) is var n ? n.WithStatement(Body(n.Statement)) : null;
        public override SyntaxNode? VisitForEachVariableStatement(ForEachVariableStatementSyntax node) =>
            ((ForEachVariableStatementSyntax)base.VisitForEachVariableStatement(node)!) is var n ? n.WithStatement(Body(n.Statement)) : null;

        // Not Dispose: cleanup called from `finally` after an interrupt must still run.
        public override SyntaxNode? VisitMethodDeclaration(MethodDeclarationSyntax node) =>
            ((MethodDeclarationSyntax)base.VisitMethodDeclaration(node)!) is var n && n.Body is { } body && n.Identifier.Text is not ("Dispose" or "DisposeAsync")
                ? n.WithBody(WithCheck(body)) : n;
        public override SyntaxNode? VisitLocalFunctionStatement(LocalFunctionStatementSyntax node) =>
            ((LocalFunctionStatementSyntax)base.VisitLocalFunctionStatement(node)!) is var n && n.Body is { } body ? n.WithBody(WithCheck(body)) : n;
        public override SyntaxNode? VisitParenthesizedLambdaExpression(ParenthesizedLambdaExpressionSyntax node) =>
            ((ParenthesizedLambdaExpressionSyntax)base.VisitParenthesizedLambdaExpression(node)!) is var n && n.Block is { } body ? n.WithBlock(WithCheck(body)) : n;
        public override SyntaxNode? VisitSimpleLambdaExpression(SimpleLambdaExpressionSyntax node) =>
            ((SimpleLambdaExpressionSyntax)base.VisitSimpleLambdaExpression(node)!) is var n && n.Block is { } body ? n.WithBlock(WithCheck(body)) : n;
    }
}
